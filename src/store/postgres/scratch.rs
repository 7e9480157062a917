//! A throwaway PostgreSQL cluster on a Unix socket in a folder of its own,
//! for tests and benchmarks: `initdb`, then the server as a child process,
//! stopped and removed when dropped (and stopped by the kernel if the process
//! that started it dies first). Needs PostgreSQL's server binaries
//! (Debian's `postgresql`); `RACKBOOT_PG_BIN` names their folder when it is
//! not `/usr/lib/postgresql/<version>/bin`.
//!
//! PostgreSQL refuses to run as root; as root the cluster runs as the
//! `postgres` user, which owns its folder.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running scratch cluster.
pub struct ScratchCluster {
    dir: PathBuf,
    server: std::sync::Mutex<Option<Child>>,
    /// Set by [`ScratchCluster::serve_tls`]: the server also listens on
    /// 127.0.0.1 at this port (its Unix socket takes the number too).
    tcp_port: std::sync::Mutex<Option<u16>>,
}

/// How long the server may take to accept connections.
const START_WITHIN: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the server is killed.
const STOP_WITHIN: Duration = Duration::from_secs(10);

impl ScratchCluster {
    /// Makes a new cluster and starts its server; fails saying which step
    /// failed and what it printed.
    pub fn start() -> Result<ScratchCluster, String> {
        let bin = bin_dir()?;
        remove_stale();
        let dir = std::env::temp_dir().join(format!(
            "rackboot-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("data"))
            .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        let cluster = ScratchCluster {
            dir,
            server: std::sync::Mutex::new(None),
            tcp_port: std::sync::Mutex::new(None),
        };
        let owner = owner()?;
        if let Some((uid, gid)) = owner {
            for p in [cluster.dir.clone(), cluster.dir.join("data")] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(|e| format!("cannot give {} to postgres: {e}", p.display()))?;
            }
        }
        let data = cluster.data();
        let out = as_owner(Command::new(bin.join("initdb")), owner)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bin.join("initdb").display()))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cluster.run_server(&bin, owner)?;
        Ok(cluster)
    }

    fn server(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One cluster for the whole process (each test makes its own
    /// databases in it), stopped and removed when the process exits.
    pub fn for_process() -> &'static ScratchCluster {
        static CLUSTER: std::sync::OnceLock<ScratchCluster> = std::sync::OnceLock::new();
        extern "C" fn at_exit() {
            if let Some(c) = CLUSTER.get() {
                c.stop();
                let _ = std::fs::remove_dir_all(&c.dir);
            }
        }
        CLUSTER.get_or_init(|| {
            let cluster = ScratchCluster::start()
                .unwrap_or_else(|e| panic!("cannot start a scratch PostgreSQL: {e}"));
            // SAFETY: registers a plain function; the test harness leaves
            // through exit(3), which runs it.
            unsafe {
                libc::atexit(at_exit);
            }
            cluster
        })
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The folder the server's socket is in (libpq's `host`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A libpq connection string for `database`, as user `postgres`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={database}",
            self.socket_dir().display(),
            self.port()
        )
    }

    fn port(&self) -> u16 {
        self.tcp_port
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .unwrap_or(5432)
    }

    /// Restarts the server listening on 127.0.0.1 too (a free port, which
    /// it returns) with TLS on: `cert` (PEM, its chain) and `key` (PEM).
    /// PostgreSQL speaks TLS over TCP only.
    pub fn serve_tls(&self, cert: &Path, key: &Path) -> Result<u16, String> {
        let owner = owner()?;
        for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
            let to = self.data().join(name);
            std::fs::copy(from, &to).map_err(|e| format!("{}: {e}", from.display()))?;
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| format!("{}: {e}", to.display()))?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&to, Some(uid), Some(gid))
                    .map_err(|e| format!("{}: {e}", to.display()))?;
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        *self
            .tcp_port
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(port);
        self.restart()?;
        Ok(port)
    }

    /// Makes an empty database called `name`.
    pub fn create_database(&self, name: &str) -> Result<(), String> {
        self.psql(&format!("CREATE DATABASE \"{name}\""))
    }

    /// Runs one SQL command in the `postgres` database with `psql`.
    pub fn psql(&self, sql: &str) -> Result<(), String> {
        let bin = bin_dir()?;
        let out = Command::new(bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url("postgres"))
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "psql `{sql}` failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Stops the server (a fast shutdown: clients are cut off) and waits
    /// for it; the cluster stays, so [`ScratchCluster::restart`] finds it.
    pub fn stop(&self) {
        let Some(mut server) = self.server().take() else {
            return;
        };
        // SIGINT: PostgreSQL's fast shutdown (clients cut off, data kept).
        // SAFETY: kill(2) on our own child's PID, which it still is (not waited for).
        unsafe {
            libc::kill(server.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + STOP_WITHIN;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = server.kill();
        let _ = server.wait();
    }

    /// Starts the server again after [`ScratchCluster::stop`].
    pub fn restart(&self) -> Result<(), String> {
        self.stop();
        self.run_server(&bin_dir()?, owner()?)
    }

    /// Starts the server on the cluster's data (its log appended to
    /// `server.log`) and waits until it accepts connections.
    fn run_server(&self, bin: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .map_err(|e| format!("cannot open the server log: {e}"))?;
        let mut server = as_owner(Command::new(bin.join("postgres")), owner);
        server
            .arg("-D")
            .arg(self.data())
            .arg("-k")
            .arg(&self.dir)
            // Unix socket only; fsync off: a scratch cluster need not survive
            // the machine, and tests wait on every commit.
            .args(["-c", "fsync=off"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=32MB"])
            .args(self.listening())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; it only sets a flag of this
        // (child) process, after its uid was set (a change of uid clears it).
        unsafe {
            server.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        *self.server() = Some(spawn_from_lasting_thread(server)?);
        self.wait_ready(bin)
    }

    /// Where the server listens beyond its Unix socket: nowhere, or with
    /// TLS on 127.0.0.1 ([`ScratchCluster::serve_tls`]).
    fn listening(&self) -> Vec<String> {
        let tls = self
            .tcp_port
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some();
        let port = self.port().to_string();
        let mut args = vec!["-p", &port, "-c"];
        if tls {
            args.extend(["listen_addresses=127.0.0.1", "-c", "ssl=on"]);
        } else {
            args.push("listen_addresses=");
        }
        args.into_iter().map(String::from).collect()
    }

    /// Waits (bounded) until the server accepts connections.
    fn wait_ready(&self, bin: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_WITHIN;
        loop {
            let ok = Command::new(bin.join("pg_isready"))
                .arg("-h")
                .arg(&self.dir)
                .args(["-p", &self.port().to_string(), "-U", "postgres", "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            if let Some(server) = self.server().as_mut()
                && let Ok(Some(status)) = server.try_wait()
            {
                return Err(format!(
                    "the PostgreSQL server exited ({status}): {}",
                    self.log_tail()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the PostgreSQL server did not accept connections within {START_WITHIN:?}: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for ScratchCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The folder of PostgreSQL's server binaries.
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("RACKBOOT_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            format!("no PostgreSQL server here (/usr/lib/postgresql: {e}); install Debian's `postgresql` or set RACKBOOT_PG_BIN")
        })?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "no initdb under /usr/lib/postgresql/*/bin; install Debian's `postgresql`".to_string()
    })
}

/// Whom the cluster runs as: `postgres` when this process is root (the
/// server refuses root), else this process's own user (`None`).
fn owner() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == "postgres")
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .map(Some)
        .ok_or_else(|| "no `postgres` user to run PostgreSQL as (root may not)".to_string())
}

fn as_owner(mut command: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    command
}

type Spawn = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// Spawns from one thread that lives as long as the process: the server's
/// parent-death signal fires when the *thread* that forked it ends, and a
/// test's thread ends long before the cluster should.
fn spawn_from_lasting_thread(command: Command) -> Result<Child, String> {
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Spawn>>> =
        std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Spawn>();
        std::thread::spawn(move || {
            for (mut command, answer) in rx {
                let _ = answer.send(command.spawn());
            }
        });
        std::sync::Mutex::new(tx)
    });
    let (tx, rx) = std::sync::mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((command, tx))
        .map_err(|e| e.to_string())?;
    rx.recv()
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot start the PostgreSQL server: {e}"))
}

/// Removes the folders of scratch clusters whose process is gone (a test
/// run that was killed before it could clean up).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("rackboot-pg-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid.to_string()).exists();
        let running = e.path().join("data/postmaster.pid").exists();
        if !alive && !running {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
