//! What the RFC 9421 tests share.

use base64::Engine as _;
use ed25519_dalek::SigningKey;

/// RFC 9421 Appendix B.1.4, `test-key-ed25519`: the JWK's `d` and `x` as
/// raw bytes (another library's key types can be built from them).
pub fn rfc_key_bytes() -> ([u8; 32], [u8; 32]) {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let d: [u8; 32] = b64
        .decode("n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU")
        .unwrap()
        .try_into()
        .unwrap();
    let x: [u8; 32] = b64
        .decode("JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs")
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(
        SigningKey::from_bytes(&d).verifying_key().to_bytes(),
        x,
        "the JWK's d and x belong together"
    );
    (d, x)
}
