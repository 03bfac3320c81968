//! TLS with rustls (ring provider): the HTTP port (`--tls-cert`/`--tls-key`, HTTP/1.1 and HTTP/2 by
//! ALPN), the certificate reloaded on SIGHUP without dropping a connection (new handshakes get the
//! new one; a file that fails to load keeps the old one, logged), and the client side the CLI uses
//! (`https://` with the system roots plus an optional CA file).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use arc_swap::ArcSwap;
use rustls::{
    client::ResolvesClientCert,
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    ClientConfig, RootCertStore, ServerConfig, SignatureScheme,
};

/// The one crypto provider: ring (builds with `cc` alone, where aws-lc-rs needs minutes of C and
/// cmake). rustls 0.23.48 deprecates it for lacking post-quantum key exchange (X25519MLKEM768):
/// connections use X25519 / P-256 / P-384 key exchange. Switching to aws-lc-rs is a feature flag
/// away when post-quantum key exchange is wanted.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Reads the PEM certificates in `path` (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

impl CertFiles {
    /// The chain and key, checked to belong together.
    pub fn load(&self) -> Result<CertifiedKey, String> {
        let certs = load_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("{}: no usable PEM private key: {e}", self.key.display()))?;
        CertifiedKey::from_der(certs, key, &provider())
            .map_err(|e| format!("{} and {}: {e}", self.cert.display(), self.key.display()))
    }
}

/// The server's certificate, swapped in place by [`Reloading::reload`].
pub struct Reloading {
    files: CertFiles,
    current: ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("files", &self.files)
            .finish()
    }
}

impl Reloading {
    /// Loads the chain and key from `files`; the error names the file at fault.
    pub fn new(files: CertFiles) -> Result<Self, String> {
        let key = files.load()?;
        Ok(Self {
            files,
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Loads the files again; on any error the old certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let key = self.files.load()?;
        self.current.store(Arc::new(key));
        Ok(())
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The same certificate presented as a client's (the Raft port's calls to peers): a reload swaps
/// it for new connections too.
impl ResolvesClientCert for Reloading {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A TLS acceptor and the handle that reloads its certificate.
#[derive(Clone)]
pub struct ServerTls {
    /// Accepts TLS connections with the current certificate.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The certificate, which [`Reloading::reload`] swaps (on SIGHUP).
    pub certs: Arc<Reloading>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("certs", &self.certs)
            .finish()
    }
}

/// Reads every certificate of a CA file into a root store.
fn roots_from(ca: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// A server side: `files` for the certificate; with `client_ca`, clients must present a certificate
/// signed by it (mutual TLS); `alpn` in order of preference.
pub fn server(
    files: CertFiles,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<ServerTls, String> {
    let certs = Arc::new(Reloading::new(files)?);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots_from(ca)?), provider())
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(certs.clone());
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(ServerTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        certs,
    })
}

/// A client side (the CLI): the system's roots plus every certificate in `ca_file` (either may be
/// all there is); with `identity`, the client presents that certificate (mutual TLS).
pub fn client(
    ca_file: Option<&Path>,
    identity: Option<&CertFiles>,
) -> Result<ClientConfig, String> {
    let mut roots = match ca_file {
        Some(ca) => roots_from(ca)?,
        None => RootCertStore::empty(),
    };
    // The system's roots; unreadable ones are skipped (a CA file may be all that is needed).
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    client_with(roots, identity)
}

/// The Raft port's client side: only the cluster's CA is trusted, and this node's certificate is
/// presented — `certs`, the Raft port's own, so a SIGHUP reload renews both sides.
pub fn peer_client(ca: &Path, certs: Arc<Reloading>) -> Result<ClientConfig, String> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots_from(ca)?)
        .with_client_cert_resolver(certs))
}

fn client_with(roots: RootCertStore, identity: Option<&CertFiles>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(files) => {
            let certs = load_certs(&files.cert)?;
            let key = PrivateKeyDer::from_pem_file(&files.key)
                .map_err(|e| format!("{}: no usable PEM private key: {e}", files.key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("{}: {e}", files.cert.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, stem: &str) -> CertFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = CertFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn a_reload_from_broken_files_keeps_the_current_certificate() {
        let d = tempfile::tempdir().unwrap();
        let files = write_pair(d.path(), "a");
        let r = Reloading::new(files.clone()).unwrap();
        let before = r.current.load_full().cert[0].clone();
        std::fs::write(&files.cert, "not a certificate").unwrap();
        let e = r.reload().unwrap_err();
        assert!(e.contains("a.pem"), "{e}");
        assert_eq!(r.current.load_full().cert[0], before);
        // A good pair replaces it.
        let b = write_pair(d.path(), "b");
        std::fs::copy(&b.cert, &files.cert).unwrap();
        std::fs::copy(&b.key, &files.key).unwrap();
        r.reload().unwrap();
        assert_ne!(r.current.load_full().cert[0], before);
        // A key that is not the certificate's is refused.
        let c = write_pair(d.path(), "c");
        std::fs::copy(&c.key, &files.key).unwrap();
        assert!(r.reload().is_err());
    }
}
