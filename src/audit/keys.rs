//! The Ed25519 keys of audit checkpoints, as PEM files: the private key as
//! PKCS#8 (`-----BEGIN PRIVATE KEY-----`, what `openssl genpkey -algorithm
//! ed25519` writes) and the public key as SubjectPublicKeyInfo
//! (`-----BEGIN PUBLIC KEY-----`, what `openssl pkey -pubout` writes).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

/// Reads the private key rampart signs checkpoints with.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
        format!(
            "{} is not an Ed25519 private key in PEM ({e}); make one with `rampart audit keygen --out FILE` or `openssl genpkey -algorithm ed25519 -out FILE`",
            path.display()
        )
    })
}

/// Reads the public key a verifier checks checkpoints with.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if pem.contains("PRIVATE KEY") {
        return Err(format!(
            "{} is a private key: give the public key (`openssl pkey -in {} -pubout`), and keep the private one where rampart runs",
            path.display(),
            path.display()
        ));
    }
    VerifyingKey::from_public_key_pem(&pem).map_err(|e| {
        format!(
            "{} is not an Ed25519 public key in PEM ({e}); `rampart audit keygen` writes one beside the private key",
            path.display()
        )
    })
}

/// Makes a key pair: the private key at `out` (mode 0600, never
/// overwriting) and the public key at `out` + `.pub`. Returns the public
/// key's path and its key id.
pub fn generate(out: &Path) -> Result<(PathBuf, String), String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("no randomness for a key: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the key: {e}"))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| format!("cannot encode the public key: {e}"))?;
    let mut pub_path = out.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    write_new(out, private.as_bytes(), 0o600)?;
    write_new(&pub_path, public.as_bytes(), 0o644)?;
    Ok((pub_path, super::chain::key_id(&key.verifying_key())))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            format!(
                "cannot create {}: {e} (an existing key is never overwritten)",
                path.display()
            )
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_loads_back_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("audit.pem");
        let (public, id) = generate(&out).unwrap();
        assert_eq!(public, dir.path().join("audit.pem.pub"));
        let key = load_signing_key(&out).unwrap();
        let verifying = load_verifying_key(&public).unwrap();
        assert_eq!(key.verifying_key(), verifying);
        assert_eq!(id, super::super::chain::key_id(&verifying));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = generate(&out).unwrap_err();
        assert!(again.contains("never overwritten"), "{again}");
    }

    #[test]
    fn the_wrong_kind_of_file_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("k.pem");
        generate(&out).unwrap();
        let e = load_verifying_key(&out).unwrap_err();
        assert!(
            e.contains("is a private key") && e.contains("-pubout"),
            "{e}"
        );
        let e = load_signing_key(&dir.path().join("k.pem.pub")).unwrap_err();
        assert!(e.contains("not an Ed25519 private key"), "{e}");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "hello").unwrap();
        let e = load_verifying_key(&junk).unwrap_err();
        assert!(e.contains("not an Ed25519 public key"), "{e}");
        let e = load_signing_key(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn openssl_keys_are_read_when_openssl_is_installed() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("k.pem");
        let public = dir.path().join("k.pub");
        let made = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&private)
            .status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: no openssl with ed25519 on this machine");
            return;
        }
        let exported = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap();
        assert!(exported.success());
        let key = load_signing_key(&private).unwrap();
        assert_eq!(load_verifying_key(&public).unwrap(), key.verifying_key());
    }
}
