//! Helpers shared by the integration tests: a real etcd (Debian `etcd-server`, 3.4)
//! started on free 127.0.0.1 ports with a temporary data dir, killed by PID and removed on
//! drop. Each test binary uses what it needs.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Generous deadline for outcomes (a deadline, not a speed claim).
pub const DEADLINE: Duration = Duration::from_secs(30);

static DIRS: AtomicUsize = AtomicUsize::new(0);

pub fn etcd_binary() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join("etcd");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "etcd not found (Debian package etcd-server): run scripts/install-deps.sh; these tests need a real etcd"
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "spine-dash-etcd-{}-{}-{tag}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// TLS files of a member (server side).
#[derive(Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// One etcd member: a child process, killed (by PID) and its data removed on drop.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl Member {
    pub fn new(name: &str, scheme: &str) -> Self {
        let dir = temp_dir(name);
        Self {
            name: name.into(),
            client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            dir,
            child: None,
            args: Vec::new(),
        }
    }

    pub fn configure(&mut self, initial_cluster: &str, tls: Option<&ServerTls>) {
        let mut args: Vec<String> = [
            "--name",
            &self.name,
            "--data-dir",
            &self.dir.join("data").to_string_lossy(),
            "--listen-client-urls",
            &self.client_url,
            "--advertise-client-urls",
            &self.client_url,
            "--listen-peer-urls",
            &self.peer_url,
            "--initial-advertise-peer-urls",
            &self.peer_url,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            "new",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        if let Some(tls) = tls {
            for (flag, path) in [
                ("--cert-file", &tls.cert),
                ("--key-file", &tls.key),
                ("--trusted-ca-file", &tls.ca),
            ] {
                args.push(flag.into());
                args.push(path.to_string_lossy().into_owned());
            }
            args.push("--client-cert-auth".into());
        }
        self.args = args;
    }

    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("etcd.log")).unwrap();
        let child = Process::new(etcd_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }

    /// Kills the process (SIGKILL to its PID) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts one plain-http member and waits until it is healthy.
pub async fn single() -> Member {
    let mut m = Member::new("solo", "http");
    let cluster = format!("solo={}", m.peer_url);
    m.configure(&cluster, None);
    m.start();
    wait_healthy(&raw_client(), &m).await;
    m
}

pub fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

pub async fn wait_healthy(http: &reqwest::Client, m: &Member) {
    let start = Instant::now();
    while start.elapsed() < DEADLINE {
        if let Ok(resp) = http.get(format!("{}/health", m.client_url)).send().await
            && resp.text().await.unwrap_or_default().contains("\"true\"")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "etcd {} not healthy within {DEADLINE:?}:\n{}",
        m.name,
        m.log()
    );
}
