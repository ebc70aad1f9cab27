//! The cluster's certificate authority: the one thing every node of a cluster shares.
//!
//! With no CA configured, a node uses the per-user CA in `$COLONY_HOME` (default `~/.colony`),
//! creating it on first use with owner-only permissions. So every node started by the same user on
//! one machine trusts every other with no setup, and nobody else's nodes are trusted.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;

use crate::error::IdentityError;
use crate::identity::Identity;

/// The DNS name every node certificate carries and every client dials.
pub const SERVER_NAME: &str = "colony.node";

/// File name of the CA (certificate and key, PEM) inside the colony directory.
pub const CA_FILE: &str = "ca.pem";

/// A cluster certificate authority able to issue node identities.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

// The issuer's name and key usages must be identical when we re-load a CA from disk, because
// the issuer fields of issued certificates are taken from these params: keep them fixed.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "colony cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl ClusterCa {
    /// Creates a fresh CA in memory (tests, or a first run).
    pub fn generate() -> Result<Self, IdentityError> {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// Loads a CA from PEM text holding its certificate and its private key.
    pub fn from_pem(pem: &str) -> Result<Self, IdentityError> {
        let cert_pem = pem_block(pem, "CERTIFICATE")
            .ok_or_else(|| IdentityError::Pem("no CERTIFICATE block".into()))?;
        let key_pem = pem_block(pem, "PRIVATE KEY")
            .ok_or_else(|| IdentityError::Pem("no PRIVATE KEY block".into()))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let cert_der = crate::identity::parse_certs(&cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| IdentityError::Pem("empty certificate".into()))?;
        Ok(Self {
            cert_pem,
            cert_der,
            key,
        })
    }

    /// The CA as PEM: certificate then private key. Keep it secret.
    pub fn to_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key.serialize_pem())
    }

    /// The CA certificate alone (PEM), which is all a node that does not issue needs to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The default per-user directory: `$COLONY_HOME`, else `$HOME/.colony`.
    pub fn default_dir() -> Result<PathBuf, IdentityError> {
        if let Some(dir) = std::env::var_os("COLONY_HOME") {
            return Ok(PathBuf::from(dir));
        }
        std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".colony"))
            .ok_or(IdentityError::NoHome)
    }

    /// Loads `dir/ca.pem`, creating the directory (mode 0700) and the CA (mode 0600) if absent.
    ///
    /// Safe against several nodes starting at once: the CA is written to a private temporary file
    /// and hard-linked into place, so exactly one CA wins and every process then loads it.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::Io { path, source }
        };
        let file = dir.join(CA_FILE);
        if !file.exists() {
            create_private_dir(dir).map_err(io(dir))?;
            let ca = Self::generate()?;
            let tmp = dir.join(format!(".{CA_FILE}.{}.tmp", std::process::id()));
            write_private(&tmp, ca.to_pem().as_bytes()).map_err(io(&tmp))?;
            let linked = fs::hard_link(&tmp, &file);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    tracing::info!(path = %file.display(), "created cluster CA");
                    return Ok(ca);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&file)(e)),
            }
        }
        let pem = fs::read_to_string(&file).map_err(io(&file))?;
        Self::from_pem(&pem)
    }

    /// Loads `dir/ca.pem`, failing if it does not exist (for tools that must not create a CA).
    pub fn load(dir: &Path) -> Result<Self, IdentityError> {
        let file = dir.join(CA_FILE);
        let pem =
            fs::read_to_string(&file).map_err(|source| IdentityError::Io { path: file, source })?;
        Self::from_pem(&pem)
    }

    /// Issues a node identity named `node_name`, valid as both server and client.
    pub fn issue(&self, node_name: &str) -> Result<Identity, IdentityError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, node_name.to_string());
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = Issuer::new(ca_params(), &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Identity::new(
            self.cert_der.clone(),
            vec![cert.der().clone()],
            key.serialize_der(),
        ))
    }
}

fn pem_block(pem: &str, label: &str) -> Option<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)?;
    let stop = pem[start..].find(&end)? + start + end.len();
    Some(format!("{}\n", &pem[start..stop]))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_same_ca() {
        let ca = ClusterCa::generate().unwrap();
        let again = ClusterCa::from_pem(&ca.to_pem()).unwrap();
        assert_eq!(ca.cert_der, again.cert_der);
        assert_eq!(ca.key.serialize_der(), again.key.serialize_der());
    }

    #[test]
    fn load_or_create_creates_once_with_private_permissions() {
        let dir = std::env::temp_dir().join(format!("colony-ca-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = ClusterCa::load_or_create(&dir).unwrap();
        let second = ClusterCa::load_or_create(&dir).unwrap();
        assert_eq!(
            first.cert_der, second.cert_der,
            "second call must reuse the CA"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join(CA_FILE)), 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
