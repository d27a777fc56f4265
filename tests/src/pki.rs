//! A throwaway certificate authority with a server certificate for 127.0.0.1/localhost and a
//! client certificate for an agent, written as PEM files; [`Pki::client_for`] makes a client
//! certificate naming a given host id.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "berth test ca");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().expect("key");
            let params = CertificateParams::new(names).expect("params");
            let cert = params.signed_by(&key, &issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
        let (client_pem, client_key) = leaf(vec!["agent.berth.test".into()]);

        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write pem");
            p
        };
        Pki {
            ca_cert: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_pem),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_pem),
            client_key: write("client.key", &client_key),
            dir,
            issuer,
        }
    }

    /// A client certificate (and key) whose SAN is `host_id`, as PEM files.
    pub fn client_for(&self, host_id: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(vec![host_id.to_owned()]).expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let cert_path = self.dir.path().join(format!("client-{host_id}.pem"));
        let key_path = self.dir.path().join(format!("client-{host_id}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write pem");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
