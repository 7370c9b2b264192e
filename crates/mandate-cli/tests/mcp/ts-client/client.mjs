// A scripted MCP client for the gateway's tests: the official MCP TypeScript
// SDK (@modelcontextprotocol/client) over streamable HTTP, each HTTP request
// (the POSTs, and in the session era the GET stream and the closing DELETE)
// carrying the mission credential as `Authorization: DPoP` and a fresh
// RFC 9449 proof by the mission key, made with jose in the transport's
// `fetch`. Nothing of Mandate's own.
//
// usage: node client.mjs URL STATE_FILE [--legacy]
//   STATE_FILE: what `mandate mission start --state` writes (`key_pem`, the
//   mission key as PKCS#8 PEM, and `credential`).
//   The SDK probes `server/discover` (2026-07-28, stateless) unless
//   --legacy (or MCP_CLIENT_MODE=legacy) asks for the session era.
// A URL-mode elicitation prints {"elicitation": {...}} and waits for one line
// {"action": "accept"|"decline"|"cancel"} on stdin.
// Reads one JSON command per line on stdin and prints one JSON answer per line:
//   {"op": "list"}                                 tools (with Mandate's access marks)
//   {"op": "call", "tool": T, "args": {...}}
//   {"op": "progress", "tool": T, "args": {...}}   a call with a progress callback
//   {"op": "exit"}                                 closes the client, then prints
//                                                  every request made: [[method, status], ...]
import { createHash, createPrivateKey, createPublicKey, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

import { Client, ProtocolError, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { SignJWT, exportJWK } from 'jose';

const args = process.argv.slice(2);
const legacy = args.includes('--legacy') || process.env.MCP_CLIENT_MODE === 'legacy';
const [url, stateFile] = args.filter(a => a !== '--legacy');
const state = JSON.parse(readFileSync(stateFile, 'utf8'));
const credential = state.credential;

/** The mission key. A PKCS#8 v2 file (with the public key) is not read by
 * every library; the 32-byte seed sits at the same offset in v1 and v2, and
 * a v1 wrapping of it is a fixed prefix (RFC 8410). */
function missionKey(pem) {
    try {
        return createPrivateKey(pem);
    } catch {
        const der = Buffer.from(pem.trim().split('\n').slice(1, -1).join(''), 'base64');
        const v1 = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), der.subarray(16, 48)]);
        return createPrivateKey({ key: v1, format: 'der', type: 'pkcs8' });
    }
}

const key = missionKey(state.key_pem);
const { kty, crv, x } = await exportJWK(createPublicKey(key));
const jwk = { kty, crv, x };
const ath = createHash('sha256').update(credential).digest('base64url');
const requests = [];

/** `fetch` with an RFC 9449 proof: htu is the URL without query and
 * fragment, ath binds the credential it travels with. */
async function dpopFetch(input, init = {}) {
    const target = new URL(input instanceof Request ? input.url : input);
    target.search = '';
    target.hash = '';
    const method = (init.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    const proof = await new SignJWT({ htm: method, htu: target.href, ath })
        .setProtectedHeader({ typ: 'dpop+jwt', alg: 'EdDSA', jwk })
        .setJti(randomUUID())
        .setIssuedAt()
        .sign(key);
    const headers = new Headers(init.headers);
    headers.set('Authorization', `DPoP ${credential}`);
    headers.set('DPoP', proof);
    const response = await fetch(input, { ...init, headers });
    requests.push([method, response.status]);
    return response;
}

function out(value) {
    process.stdout.write(`${JSON.stringify(value)}\n`);
}

// One queue of stdin lines, read by the command loop and, in the middle of
// a call, by the elicitation handler.
const lines = [];
const waiting = [];
let ended = false;
const stdin = createInterface({ input: process.stdin })
    .on('line', line => (waiting.length ? waiting.shift()(line) : lines.push(line)))
    .on('close', () => {
        ended = true;
        while (waiting.length) waiting.shift()(null);
    });
function nextLine() {
    if (lines.length) return Promise.resolve(lines.shift());
    if (ended) return Promise.resolve(null);
    return new Promise(resolve => waiting.push(resolve));
}

const client = new Client(
    { name: 'mandate-test-ts-client', version: '1.0.0' },
    {
        capabilities: { elicitation: { form: {}, url: {} } },
        versionNegotiation: { mode: legacy ? 'legacy' : 'auto' }
    }
);
client.setRequestHandler('elicitation/create', async request => {
    const params = request.params;
    if (params.mode === 'url') {
        // A person is shown the URL; the test plays them, and answers.
        out({ elicitation: { mode: 'url', url: params.url, message: params.message } });
        const answer = JSON.parse((await nextLine()) ?? '{"action": "cancel"}');
        return { action: answer.action };
    }
    return { action: 'decline' };
});

function error(e) {
    if (e instanceof ProtocolError) return { code: e.code, message: e.message, data: e.data };
    return { name: e?.name, message: String(e?.message ?? e), code: e?.code };
}

const transport = new StreamableHTTPClientTransport(new URL(url), { fetch: dpopFetch });
await client.connect(transport);
out({
    ready: true,
    protocol_version: client.getNegotiatedProtocolVersion(),
    era: client.getProtocolEra(),
    capabilities: client.getServerCapabilities()
});

for (let line = await nextLine(); line !== null; line = await nextLine()) {
    const cmd = JSON.parse(line);
    if (cmd.op === 'exit') break;
    try {
        if (cmd.op === 'list') {
            out({ tools: (await client.listTools()).tools });
        } else if (cmd.op === 'call') {
            out({ result: await client.callTool({ name: cmd.tool, arguments: cmd.args ?? {} }) });
        } else if (cmd.op === 'progress') {
            const seen = [];
            const result = await client.callTool(
                { name: cmd.tool, arguments: cmd.args ?? {} },
                { onprogress: p => seen.push([p.progress, p.total ?? null, p.message ?? null]) }
            );
            out({ result, progress: seen });
        } else {
            out({ unknown: cmd.op });
        }
    } catch (e) {
        out({ error: error(e) });
    }
}
// In the session era, the SDK ends the session only when asked (a DELETE).
await transport.terminateSession();
await client.close();
stdin.close();
process.stdout.write(`${JSON.stringify({ requests })}\n`, () => process.exit(0));
