//! Debian's PgBouncer in `pool_mode = transaction` (as Supabase's pooler on port
//! 6543) in front of the local Postgres, on a free port, for the pooler tests.
//! Trust auth; the `*` database entry makes every `sqlx::test` database reachable.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use sqlx::PgPool;
use tokio::process::{Child, Command};

/// Server connections per database and user: fewer than the router's pool, so
/// clients really share them.
pub const SERVER_CONNECTIONS: u32 = 8;

/// A running PgBouncer; stopped when dropped.
pub struct PgBouncer {
    pub port: u16,
    _child: Child,
    _dir: tempfile::TempDir,
}

/// The `pgbouncer` binary (`PGBOUNCER`, else `PATH`, else Debian's /usr/sbin).
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PGBOUNCER") {
        return PathBuf::from(path);
    }
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("pgbouncer"))
        .find(|p| p.is_file());
    in_path.unwrap_or_else(|| {
        panic!(
            "pgbouncer is missing: the pooler tests run the router through Debian's PgBouncer; \
             install it with scripts/setup-tests.sh (or `sudo apt-get install pgbouncer`)"
        )
    })
}

/// The Postgres server of `DATABASE_URL`: (host, port).
fn postgres_server() -> (String, u16) {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("DATABASE_URL parses");
    (options.get_host().to_string(), options.get_port())
}

impl PgBouncer {
    /// Starts PgBouncer in transaction mode and waits until it accepts connections.
    pub async fn start() -> Self {
        let bin = binary();
        let dir = tempfile::tempdir().expect("tempdir");
        // PgBouncer refuses to run as root: it runs as `nobody`, who must read this.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let port = super::process::free_port();
        let (host, pg_port) = postgres_server();
        let auth = dir.path().join("users.txt");
        write(&auth, "\"postgres\" \"\"\n");
        let ini = dir.path().join("pgbouncer.ini");
        write(
            &ini,
            &format!(
                "[databases]\n\
                 * = host={host} port={pg_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {auth}\n\
                 pool_mode = transaction\n\
                 default_pool_size = {SERVER_CONNECTIONS}\n\
                 max_client_conn = 500\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile =\n\
                 pidfile =\n",
                auth = auth.display(),
            ),
        );
        let mut command = Command::new(&bin);
        if nix_is_root() {
            command.args(["-u", "nobody"]);
        }
        let child = command
            .arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        tokio::time::timeout(Duration::from_secs(20), async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("pgbouncer listens in time");
        Self {
            port,
            _child: child,
            _dir: dir,
        }
    }

    /// The URL of the test's own database through this pooler.
    pub async fn url_of(&self, db: &PgPool) -> String {
        let name: String = sqlx::query_scalar("select current_database()")
            .fetch_one(db)
            .await
            .expect("database name");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// A pool as the router builds it for a transaction-mode `DATABASE_URL`.
    pub async fn router_pool(&self, db: &PgPool) -> PgPool {
        router::db::connect(&self.url_of(db).await, 20)
            .await
            .expect("a pool through pgbouncer")
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write pgbouncer config");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
