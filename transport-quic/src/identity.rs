//! A node's TLS identity: its certificate chain and key, and the CA it trusts.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::error::IdentityError;

/// ALPN protocol id spoken on colony connections.
pub const ALPN: &[u8] = b"colony/1";

/// What a node presents to peers and what it trusts.
///
/// Every connection is mutually authenticated: a node only accepts peers whose certificate was
/// issued by `ca`, and only talks to servers whose certificate was.
#[derive(Clone)]
pub struct Identity {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivatePkcs8KeyDer<'static>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

impl Identity {
    pub(crate) fn new(
        ca: CertificateDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        key_pkcs8: Vec<u8>,
    ) -> Self {
        Self {
            ca,
            chain,
            key: Arc::new(PrivatePkcs8KeyDer::from(key_pkcs8)),
        }
    }

    /// Builds an identity from PEM issued elsewhere: the CA certificate, the node's certificate
    /// chain and its PKCS#8 private key.
    pub fn from_pem(ca_cert: &str, chain: &str, key: &str) -> Result<Self, IdentityError> {
        let ca = parse_certs(ca_cert)?
            .into_iter()
            .next()
            .ok_or_else(|| IdentityError::Pem("no CA certificate".into()))?;
        let chain = parse_certs(chain)?;
        if chain.is_empty() {
            return Err(IdentityError::Pem("no node certificate".into()));
        }
        let key = rcgen::KeyPair::from_pem(key)?;
        Ok(Self::new(ca, chain, key.serialize_der()))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, IdentityError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.as_ref().clone_key())
    }

    /// The server half: present our chain, require a client certificate from the CA.
    pub(crate) fn server_config(&self) -> Result<rustls::ServerConfig, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| IdentityError::Pem(format!("client verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// The client half: trust only the CA, present our chain.
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }
}

pub(crate) fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::Pem(e.to_string()))
}
