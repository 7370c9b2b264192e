#!/usr/bin/env python3
"""Helper of scripts/bench-decide.sh (standard library only).

  helper.py policies MANDATE_POLICY_DIR CEDAR_AGENT_POLICIES_JSON
      The 50 organisation policies, as Mandate's policy directory
      (org.cedar + bench.cedarschema) and as cedar-agent's PUT /v1/policies
      body: the same policy text on both sides.
  helper.py bodies MISSION_START_JSON CREDENTIAL_FILE OUT_DIR
      The request bodies (Mandate /v1/decide, cedar-agent /v1/is_authorized;
      an Allow and a boundary Deny each) and cedar-agent's entities.
  helper.py check mandate|cedar-agent allow|deny RESPONSE_FILE
      Fails loudly unless the answer is the expected decision.
  helper.py field JSON_FILE KEY[.KEY...]
      Prints one field of a JSON document.
  helper.py fdatasync DIR [N]
      Median times of a 4 KiB write + fdatasync in DIR, in microseconds:
      in place in a preallocated file, then appended.
  helper.py median X [X...]
      The median.
  helper.py freeport
      A free TCP port on 127.0.0.1.
"""

import json
import os
import socket
import statistics
import sys
import time

# The labels the timed request carries: `public-7` matches one permit;
# nothing matches a boundary or an escalation, so both sides answer Allow.
ALLOW_LABELS = ["public-7", "customer-acme"]
# The boundary check before timing: `restricted-3` matches a forbid.
DENY_LABELS = ["public-7", "restricted-3"]
PERMIT_ID = "permit-7"
BOUNDARY_ID = "boundary-3"

SCHEMA = """\
// Benchmark action (scripts/bench-decide.sh): the request's resource labels
// travel in the context, the one place both Mandate (cedar-policy 4) and
// cedar-agent 0.2.0 (cedar-policy 2.4) evaluate the same policy text on.
action fetch appliesTo {
  principal: Agent,
  resource: [Resource],
  context: { trust: String, time: Long, labels: Set<String> },
};
"""


def policies():
    """(id, text): 20 boundaries, 15 escalations, 15 permits, the mix of
    crates/mandate-core/benches/decision.rs with tags as context labels."""
    out = []
    for i in range(20):
        out.append((
            f"boundary-{i}",
            f'@id("boundary-{i}")\n'
            f'forbid(principal, action == Action::"fetch", resource)\n'
            f'when {{ context.labels.contains("restricted-{i}") }};',
        ))
    for i in range(15):
        out.append((
            f"escalate-{i}",
            f'@id("escalate-{i}")\n@kind("escalate")\n'
            f'permit(principal, action == Action::"fetch", resource)\n'
            f'when {{ context.labels.contains("region-{i}") && context.trust == "signed" }};',
        ))
    for i in range(15):
        out.append((
            f"permit-{i}",
            f'@id("permit-{i}")\n'
            f'permit(principal, action == Action::"fetch", resource)\n'
            f'when {{ context.labels.contains("public-{i}") }};',
        ))
    return out


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, separators=(",", ":"))


def cmd_policies(policy_dir, agent_json):
    ps = policies()
    os.makedirs(policy_dir, exist_ok=True)
    with open(os.path.join(policy_dir, "org.cedar"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(text for _, text in ps) + "\n")
    with open(os.path.join(policy_dir, "bench.cedarschema"), "w", encoding="utf-8") as f:
        f.write(SCHEMA)
    write_json(agent_json, [{"id": pid, "content": text} for pid, text in ps])


def cmd_bodies(start_json, credential_file, out):
    with open(start_json, encoding="utf-8") as f:
        mission = json.load(f)["mission"]
    with open(credential_file, encoding="utf-8") as f:
        credential = f.read().strip()
    mid = mission["id"]
    now = int(time.time())
    resource = {"type": "Resource", "id": "invoice-42"}
    for name, labels in (("allow", ALLOW_LABELS), ("deny", DENY_LABELS)):
        # Mandate sets `trust` and `time` itself.
        write_json(os.path.join(out, f"mandate-{name}.json"), {
            "credential": credential,
            "action": "fetch",
            "resource": resource,
            "context": {"labels": labels},
        })
        # cedar-agent: the same principal, action, resource and context
        # (with the trust and time Mandate would add).
        write_json(os.path.join(out, f"cedar-agent-{name}.json"), {
            "principal": 'Agent::"bench-bot"',
            "action": 'Action::"fetch"',
            "resource": 'Resource::"invoice-42"',
            "context": {"trust": "signed", "time": now, "labels": labels},
        })

    # The entities Mandate builds for each decision, stored once in
    # cedar-agent (Cedar 2 entity JSON: entity references as `__entity`).
    def ref(t, i):
        return {"__entity": {"type": t, "id": i}}

    principal = mission.get("principal", "alice")
    write_json(os.path.join(out, "cedar-agent-entities.json"), [
        {"uid": {"type": "User", "id": principal}, "attrs": {}, "parents": []},
        {"uid": {"type": "Mission", "id": mid}, "attrs": {
            "principal": ref("User", principal),
            "goal": mission.get("goal", "benchmark"),
            "tags": [],
            "attested": False,
            "budget": int(mission.get("budget", 100_000_000)),
            "budget_used": 0,
            "started_at": int(mission.get("started_at") or now),
            "expires_at": int(mission.get("expires_at", now + 3600)),
        }, "parents": []},
        {"uid": {"type": "Agent", "id": "bench-bot"},
         "attrs": {"mission": ref("Mission", mid)}, "parents": []},
        {"uid": {"type": "Resource", "id": "invoice-42"},
         "attrs": {"id": "invoice-42"}, "parents": []},
    ])


def fail(msg):
    print(f"bench-decide: {msg}", file=sys.stderr)
    sys.exit(1)


def cmd_check(side, want, path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        r = json.loads(text)
    except ValueError:
        fail(f"{side}: not JSON: {text[:500]!r}")
    if side == "mandate":
        expected = {
            "allow": ("allow", "scope", [f"org.cedar/{PERMIT_ID}"]),
            "deny": ("deny", "boundary", [f"org.cedar/{BOUNDARY_ID}"]),
        }[want]
        got = (r.get("decision"), r.get("code"), r.get("policies"))
    else:
        expected = {
            "allow": ("Allow", [PERMIT_ID]),
            "deny": ("Deny", [BOUNDARY_ID]),
        }[want]
        d = r.get("diagnostics") or {}
        got = (r.get("decision"), sorted(d.get("reason") or []))
        if d.get("errors"):
            fail(f"{side}: evaluation errors: {d['errors']}")
    if got != expected:
        fail(f"{side}: expected {expected}, got {got}: {text[:500]}")
    print(f"  {side:<12} {want:<5} -> {text.strip()[:160]}")


def cmd_field(path, key):
    with open(path, encoding="utf-8") as f:
        v = json.load(f)
    for k in key.split("."):
        v = v[k]
    print(v)


def cmd_fdatasync(d, n=200):
    """Prints two medians, in microseconds: a 4 KiB write in place in a
    preallocated file + fdatasync (what a write-ahead log that has wrapped,
    like SQLite's WAL after a checkpoint, pays: data only), and a 4 KiB
    append + fdatasync (the file grows, so the file system also commits its
    size: on ext4 a journal commit, shared with every other process's
    pending metadata)."""
    page = b"\x07" * 4096
    pages = 256

    def timed(write, fd):
        for i in range(20):  # warm-up
            write(fd, i)
            os.fdatasync(fd)
        ts = []
        for i in range(n):
            t = time.perf_counter_ns()
            write(fd, i)
            os.fdatasync(fd)
            ts.append(time.perf_counter_ns() - t)
        return statistics.median(ts) / 1000

    out = []
    for name, prealloc, write in (
        ("fdatasync-probe-inplace", True,
         lambda fd, i: os.pwrite(fd, page, (i % pages) * 4096)),
        ("fdatasync-probe-append", False, lambda fd, i: os.write(fd, page)),
    ):
        path = os.path.join(d, name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if prealloc:
                os.write(fd, page * pages)
                os.fsync(fd)
            out.append(timed(write, fd))
        finally:
            os.close(fd)
            os.unlink(path)
    print(" ".join(f"{v:.1f}" for v in out))


def cmd_freeport():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def main(argv):
    if len(argv) < 2:
        fail(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "policies":
        cmd_policies(*args)
    elif cmd == "bodies":
        cmd_bodies(*args)
    elif cmd == "check":
        cmd_check(*args)
    elif cmd == "field":
        cmd_field(*args)
    elif cmd == "fdatasync":
        cmd_fdatasync(args[0], int(args[1]) if len(args) > 1 else 200)
    elif cmd == "median":
        print(f"{statistics.median(float(a) for a in args):.1f}")
    elif cmd == "freeport":
        cmd_freeport()
    else:
        fail(f"unknown command {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
