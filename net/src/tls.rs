//! TLS material: the cluster CA, this endpoint's certificate and key, and
//! the QUIC configurations built from them. Mutual TLS only: a node or
//! client whose certificate the cluster CA did not sign is refused during
//! the handshake, and there is no plaintext mode.
//!
//! Identities are DNS names in the certificate: `node-<id>.synod` for node
//! `<id>`, `client-<name>.synod` for clients. A node dialing node 3 asks for
//! `node-3.synod`, so a node cannot be impersonated by another certificate
//! of the same CA; an accepted connection is a node if its certificate is
//! valid for one of the configured peers' names, otherwise a client (which
//! may send requests, never Raft traffic).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The ALPN protocol name of Synod's QUIC connections.
pub const ALPN: &[u8] = b"synod/1";

/// Errors about TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {reason}; check the path and that it holds PEM data")]
    Read {
        /// Which file ("CA certificate", "certificate", "private key").
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the material (key does not match the certificate,
    /// unsupported algorithm, ...).
    #[error("invalid TLS material: {0}")]
    Invalid(String),
    /// Generating certificates failed.
    #[error("generating certificates failed: {0}")]
    Generate(String),
    /// Writing generated files failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The DNS name in node `id`'s certificate.
pub fn node_name(id: u64) -> String {
    format!("node-{id}.synod")
}

/// The DNS name in client `name`'s certificate.
pub fn client_name(name: &str) -> String {
    format!("client-{name}.synod")
}

/// The cluster CA plus this endpoint's own certificate chain and key.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The cluster CA certificate: the only trust root.
    pub ca: CertificateDer<'static>,
    /// This endpoint's certificate chain (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// This endpoint's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn read_err(what: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl TlsMaterial {
    /// Loads PEM files: the CA certificate, this endpoint's certificate
    /// (chain) and its private key.
    pub fn from_pem_files(ca: &Path, cert: &Path, key: &Path) -> Result<TlsMaterial, TlsError> {
        let ca_cert =
            CertificateDer::from_pem_file(ca).map_err(|e| read_err("CA certificate", ca, e))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| read_err("certificate", cert, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| read_err("certificate", cert, e))?;
        if chain.is_empty() {
            return Err(read_err("certificate", cert, "no certificate in the file"));
        }
        let key_der =
            PrivateKeyDer::from_pem_file(key).map_err(|e| read_err("private key", key, e))?;
        let m = TlsMaterial {
            ca: ca_cert,
            chain,
            key: key_der,
        };
        // Fail now, with the file names at hand, rather than at the first
        // connection.
        m.server_config(Duration::from_secs(5), Duration::from_secs(1))?;
        Ok(m)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| TlsError::Invalid(format!("CA certificate: {e}")))?;
        Ok(Arc::new(roots))
    }

    fn transport(
        idle: Duration,
        keep_alive: Duration,
    ) -> Result<Arc<quinn::TransportConfig>, TlsError> {
        let mut t = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(idle)
            .map_err(|e| TlsError::Invalid(format!("idle timeout: {e}")))?;
        t.max_idle_timeout(Some(idle));
        t.keep_alive_interval(Some(keep_alive));
        t.max_concurrent_bidi_streams(1024u32.into());
        t.max_concurrent_uni_streams(64u32.into());
        // Raft batches are large under load: let a connection carry them.
        t.stream_receive_window((8u32 << 20).into());
        t.receive_window((32u32 << 20).into());
        t.send_window(32 << 20);
        Ok(Arc::new(t))
    }

    /// The server side: requires a client certificate signed by the CA.
    pub fn server_config(
        &self,
        idle: Duration,
        keep_alive: Duration,
    ) -> Result<quinn::ServerConfig, TlsError> {
        let provider = Self::provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Invalid(format!("certificate and key: {e}")))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Invalid(e.to_string()))?;
        let mut sc = quinn::ServerConfig::with_crypto(Arc::new(quic));
        sc.transport_config(Self::transport(idle, keep_alive)?);
        Ok(sc)
    }

    /// The client side: verifies the server against the CA and presents
    /// this endpoint's certificate.
    pub fn client_config(
        &self,
        idle: Duration,
        keep_alive: Duration,
    ) -> Result<quinn::ClientConfig, TlsError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Invalid(format!("certificate and key: {e}")))?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Invalid(e.to_string()))?;
        let mut cc = quinn::ClientConfig::new(Arc::new(quic));
        cc.transport_config(Self::transport(idle, keep_alive)?);
        Ok(cc)
    }

    /// A stateless-reset key derived from this endpoint's private key, so
    /// that a restarted node can reset its peers' stale connections at once
    /// instead of leaving them to time out.
    pub fn reset_key(&self) -> ring::hmac::Key {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.key.secret_der());
        let salt = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"synod stateless reset");
        let derived = ring::hmac::sign(&salt, digest.as_ref());
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref())
    }
}

/// Whether `cert` (a peer's leaf certificate, already verified against the
/// CA by the handshake) is valid for the DNS name `name`.
pub fn cert_is_for(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(server_name) = ServerName::try_from(name.to_string()) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&server_name).is_ok()
}

/// Dev helper: a cluster CA and certificates, written as PEM files.
pub mod dev {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    /// Paths of one generated certificate and key.
    #[derive(Clone, Debug)]
    pub struct CertFiles {
        /// The certificate (PEM).
        pub cert: PathBuf,
        /// The private key (PEM, PKCS#8).
        pub key: PathBuf,
    }

    /// What [`generate`] wrote.
    #[derive(Clone, Debug)]
    pub struct DevCerts {
        /// The CA certificate every node and client trusts.
        pub ca: PathBuf,
        /// The CA's private key (keep it to issue more certificates).
        pub ca_key: PathBuf,
        /// Per node id, its certificate and key.
        pub nodes: Vec<(u64, CertFiles)>,
        /// Per client name, its certificate and key.
        pub clients: Vec<(String, CertFiles)>,
    }

    impl DevCerts {
        /// TLS material for node `id`.
        pub fn node(&self, id: u64) -> Result<TlsMaterial, TlsError> {
            let (_, f) = self
                .nodes
                .iter()
                .find(|(n, _)| *n == id)
                .ok_or_else(|| TlsError::Invalid(format!("no certificate for node {id}")))?;
            TlsMaterial::from_pem_files(&self.ca, &f.cert, &f.key)
        }

        /// TLS material for client `name`.
        pub fn client(&self, name: &str) -> Result<TlsMaterial, TlsError> {
            let (_, f) = self
                .clients
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| TlsError::Invalid(format!("no certificate for client {name}")))?;
            TlsMaterial::from_pem_files(&self.ca, &f.cert, &f.key)
        }
    }

    fn gen(e: impl std::fmt::Display) -> TlsError {
        TlsError::Generate(e.to_string())
    }

    fn write(path: PathBuf, data: &str) -> Result<PathBuf, TlsError> {
        std::fs::write(&path, data).map_err(|source| TlsError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Generates a CA named `ca_name` and certificates for `nodes` and
    /// `clients` into `dir` (created if missing): `ca.pem`, `ca.key`,
    /// `node-<id>.pem/.key`, `client-<name>.pem/.key`. Ed25519 keys. For
    /// demos and tests; production clusters should use their own PKI with
    /// the same names.
    pub fn generate(
        dir: &Path,
        ca_name: &str,
        nodes: &[u64],
        clients: &[&str],
    ) -> Result<DevCerts, TlsError> {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let alg = &rcgen::PKCS_ED25519;
        let ca_key = KeyPair::generate_for(alg).map_err(gen)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, ca_name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = p.self_signed(&ca_key).map_err(gen)?;
        let ca_path = write(dir.join("ca.pem"), &ca_cert.pem())?;
        let ca_key_path = write(dir.join("ca.key"), &ca_key.serialize_pem())?;
        let issuer = Issuer::new(p, ca_key);
        let leaf = |name: String, file: String| -> Result<CertFiles, TlsError> {
            let key = KeyPair::generate_for(alg).map_err(gen)?;
            let mut p = CertificateParams::new(vec![name.clone()]).map_err(gen)?;
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let cert = p.signed_by(&key, &issuer).map_err(gen)?;
            Ok(CertFiles {
                cert: write(dir.join(format!("{file}.pem")), &cert.pem())?,
                key: write(dir.join(format!("{file}.key")), &key.serialize_pem())?,
            })
        };
        let mut out_nodes = Vec::new();
        for &id in nodes {
            out_nodes.push((id, leaf(node_name(id), format!("node-{id}"))?));
        }
        let mut out_clients = Vec::new();
        for &c in clients {
            out_clients.push((c.to_string(), leaf(client_name(c), format!("client-{c}"))?));
        }
        Ok(DevCerts {
            ca: ca_path,
            ca_key: ca_key_path,
            nodes: out_nodes,
            clients: out_clients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_loads_and_names_check_out() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dev::generate(dir.path(), "test-ca", &[1, 2], &["app"]).unwrap();
        let n1 = certs.node(1).unwrap();
        assert!(cert_is_for(&n1.chain[0], &node_name(1)));
        assert!(!cert_is_for(&n1.chain[0], &node_name(2)));
        let c = certs.client("app").unwrap();
        assert!(cert_is_for(&c.chain[0], &client_name("app")));
        assert!(!cert_is_for(&c.chain[0], &node_name(1)));
    }

    #[test]
    fn unreadable_files_say_which_and_where() {
        let err = TlsMaterial::from_pem_files(
            Path::new("/nonexistent/ca.pem"),
            Path::new("/nonexistent/c.pem"),
            Path::new("/nonexistent/k.pem"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("CA certificate") && msg.contains("/nonexistent/ca.pem"),
            "{msg}"
        );
    }
}
