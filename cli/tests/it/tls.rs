//! `https://` coordinators: a private CA given by --ca-file is trusted; without it, exit 3.

use berth_cli::exit;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tonic::transport::{Identity, ServerTlsConfig};

use crate::fake::{ADMIN_TOKEN, FakeCoordinator};
use crate::{berth, env_token};

/// A private CA and a server certificate for `localhost` signed by it, as PEM.
fn private_ca() -> (String, Identity) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let identity = Identity::from_pem(server_cert.pem(), server_key.serialize_pem());
    (ca_cert.pem(), identity)
}

#[tokio::test]
async fn https_with_the_private_ca_works_and_without_it_exits_3() {
    let (ca_pem, identity) = private_ca();
    let fake = FakeCoordinator::start_with(Some(ServerTlsConfig::new().identity(identity))).await;
    let url = format!("https://localhost:{}", fake.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();

    let run = berth(
        &[
            "--coordinator",
            &url,
            "--ca-file",
            ca_file.to_str().unwrap(),
            "hosts",
            "list",
        ],
        env_token(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::OK, "{}", run.stderr());
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);

    let run = berth(
        &["--coordinator", &url, "hosts", "list"],
        env_token(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::UNAVAILABLE);
    assert!(
        run.stderr().ends_with("the coordinator's certificate is not trusted: pass --ca-file (or BERTH_CA_FILE) with the CA that signed it"),
        "{}",
        run.stderr()
    );
}

#[tokio::test]
async fn https_with_another_ca_says_to_check_the_ca_file() {
    let (_, identity) = private_ca();
    let (other_ca_pem, _) = private_ca();
    let fake = FakeCoordinator::start_with(Some(ServerTlsConfig::new().identity(identity))).await;
    let url = format!("https://localhost:{}", fake.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&ca_file, other_ca_pem).unwrap();

    let run = berth(
        &[
            "--coordinator",
            &url,
            "--ca-file",
            ca_file.to_str().unwrap(),
            "hosts",
            "list",
        ],
        env_token(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(run.exit_code(), exit::UNAVAILABLE);
    assert!(
        run.stderr().contains("check that --ca-file holds the CA"),
        "{}",
        run.stderr()
    );
    assert!(fake.seen().calls.is_empty());
}
