//! A real S3-compatible server for tests: `s3s-fs` serving a temporary directory
//! on a free loopback port. `scripts/setup.sh` installs it into `.tools/s3s-fs`;
//! `JARVIS_S3S_FS` names another binary.

use std::{path::PathBuf, process::Stdio, time::Duration};

use router::storage::{S3Config, Storage};

/// A running `s3s-fs` with one bucket; killed when dropped.
pub struct S3Server {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    /// Settings for [`Storage::s3`].
    pub config: S3Config,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("JARVIS_S3S_FS") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/s3s-fs/bin/s3s-fs")
}

impl S3Server {
    /// Starts the server and waits (at most 20 s) until it accepts connections.
    pub async fn start() -> Self {
        let bin = binary();
        assert!(
            bin.is_file(),
            "s3s-fs not found at {}: run scripts/setup.sh (it installs s3s-fs 0.14.1 into .tools/s3s-fs) or set JARVIS_S3S_FS",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let bucket = "jarvis-test";
        std::fs::create_dir(dir.path().join(bucket)).expect("bucket dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let (key, secret) = ("test-access-key", "test-secret-key-0123456789");
        let child = tokio::process::Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", key, "--secret-key", secret])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("s3s-fs starts");
        tokio::time::timeout(Duration::from_secs(20), async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("s3s-fs listens within 20 s");
        Self {
            _child: child,
            _dir: dir,
            config: S3Config {
                bucket: bucket.into(),
                endpoint: Some(format!("http://127.0.0.1:{port}")),
                region: "us-east-1".into(),
                access_key_id: key.into(),
                secret_access_key: secret.into(),
            },
        }
    }

    /// A storage handle on the server's bucket.
    pub fn storage(&self) -> Storage {
        Storage::s3(&self.config).expect("S3 storage opens")
    }
}
