//! An HTTPS server on loopback serving the files of a directory, for
//! tests of what Mandate reads over HTTPS (trust bundle endpoints): a real
//! TLS server (Python's `http.server` over `ssl`) with a certificate from
//! a CA made for the test, whose certificate the test gives Mandate.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The server's program: a CA and a leaf certificate for 127.0.0.1 and
/// `localhost` (with `cryptography`), then the files of `ROOT`. Each
/// request's path is appended to `reads.log` beside the certificates.
/// `/stall` answers 200 with 2 MiB of body and no length, then never ends.
const SERVER: &str = r#"
import datetime, functools, ipaddress, os, ssl, sys, time
from http.server import ThreadingHTTPServer, SimpleHTTPRequestHandler
from cryptography import x509
from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

root, out = sys.argv[1], sys.argv[2]
now = datetime.datetime.now(datetime.timezone.utc)
def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
def pem(path, data):
    with open(os.path.join(out, path), "wb") as f:
        f.write(data)
ca_key = ec.generate_private_key(ec.SECP256R1())
ca = (x509.CertificateBuilder().subject_name(name("test bundle CA")).issuer_name(name("test bundle CA"))
      .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
      .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
      .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
      .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                   data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                   crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
      .sign(ca_key, hashes.SHA256()))
key = ec.generate_private_key(ec.SECP256R1())
leaf = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256()))
pem("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
pem("leaf.pem", leaf.public_bytes(serialization.Encoding.PEM))
pem("leaf.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))

class Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        with open(os.path.join(out, "reads.log"), "a") as f:
            f.write(self.path + "\n")
    def do_GET(self):
        if self.path == "/stall":
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b" " * (2 * 1024 * 1024))
            self.wfile.flush()
            time.sleep(60)
            return
        super().do_GET()

httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=root))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(out, "leaf.pem"), os.path.join(out, "leaf.key"))
httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
"#;

/// A running HTTPS file server; stopped when dropped.
#[derive(Debug)]
pub struct HttpsFiles {
    child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA certificate (PEM) the server's certificate chains to.
    pub ca: PathBuf,
    reads: PathBuf,
    _certs: tempfile::TempDir,
}

impl HttpsFiles {
    /// Serves the files of `root` with `python` (which must have
    /// `cryptography`).
    ///
    /// # Panics
    /// If the server does not start.
    #[must_use]
    pub fn start(python: &Path, root: &Path) -> Self {
        let certs = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(python)
            .arg("-c")
            .arg(SERVER)
            .arg(root)
            .arg(certs.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the HTTPS file server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's port");
        let port: u16 = line.trim().parse().expect("the server's port");
        Self {
            child,
            url: format!("https://127.0.0.1:{port}"),
            ca: certs.path().join("ca.pem"),
            reads: certs.path().join("reads.log"),
            _certs: certs,
        }
    }

    /// How many requests it has answered.
    #[must_use]
    pub fn reads(&self) -> usize {
        std::fs::read_to_string(&self.reads)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for HttpsFiles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
