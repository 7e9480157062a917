//! A real browser in a [`Lab`]: Debian's chromium, headless, driven over WebDriver (fantoccini)
//! through chromedriver, both running inside the lab's namespace so the browser reaches rackboot
//! at its lab address.
//!
//! The WebDriver connection must be made from inside the namespace too: a network namespace is
//! a property of a thread, so one thread of this process joins the lab's namespace (setns) and
//! runs the WebDriver client on its own runtime; [`Browser::run`] hands it one async step at a
//! time and waits, bounded, for the result. The test thread never changes namespace.
//!
//! Owns: chromedriver and the browser (ended by PID with the lab; the WebDriver session is
//! closed first, which quits the browser), and the screenshots, kept under
//! `$CARGO_TARGET_TMPDIR/console-screenshots/` as test artifacts.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::lab::{Lab, wait_for_file};

/// The port chromedriver listens on, on the lab's loopback.
const DRIVER_PORT: u16 = 9515;
/// From spawning chromedriver to its "started successfully" line.
const DRIVER_START: Duration = Duration::from_secs(30);
/// One step: a page load and what the test waits for on it (a debug rackboot, a busy machine).
pub const STEP: Duration = Duration::from_secs(60);
/// How long a wait inside a step polls for what it waits for.
pub const WAIT: Duration = Duration::from_secs(30);

type Job = Box<dyn FnOnce(Client) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

pub struct Browser<'a> {
    lab: &'a Lab,
    driver: u32,
    jobs: Option<tokio::sync::mpsc::UnboundedSender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Joins the network namespace `ns` (this thread only).
fn enter_namespace(ns: &str) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("open /run/netns/{ns}: {e}"));
    // SAFETY: setns(2) with a namespace fd we hold open; it changes this thread's namespace only.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

impl<'a> Browser<'a> {
    /// Starts chromedriver in `lab` and opens a browser session (headless chromium as root, a
    /// fresh profile under the lab's directory, a window of 1400×900 for the screenshots).
    pub fn start(lab: &'a Lab) -> Browser<'a> {
        let log = lab.dir().join("chromedriver.log");
        let driver = lab.spawn(
            "chromedriver",
            &[&format!("--port={DRIVER_PORT}"), "--allowed-ips=127.0.0.1"],
            "chromedriver.log",
        );
        wait_for_file(&log, "started successfully", DRIVER_START)
            .unwrap_or_else(|e| panic!("chromedriver did not start: {e}"));
        let profile = lab.dir().join("chromium-profile");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let ns = lab.ns().to_string();
        let thread = std::thread::spawn(move || {
            enter_namespace(&ns);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let caps = json!({
                    "goog:chromeOptions": {
                        "binary": "/usr/bin/chromium",
                        "args": [
                            "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update",
                            "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,900",
                            format!("--user-data-dir={}", profile.display()),
                        ]
                    }
                });
                let caps = caps.as_object().expect("an object").clone();
                let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                let client = ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
                    .await;
                let client = match client {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                while let Some(job) = rx.recv().await {
                    job(client.clone()).await;
                }
                // The session ends with the browser in it.
                let _ = client.close().await;
            });
        });
        let browser = Browser {
            lab,
            driver,
            jobs: Some(tx),
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(STEP) {
            Ok(Ok(())) => browser,
            Ok(Err(e)) => panic!("no browser session: {e}; see {}", log.display()),
            Err(_) => panic!("no browser session within {STEP:?}; see {}", log.display()),
        }
    }

    /// Runs one step against the browser and returns what it returns; panics if it takes longer
    /// than [`STEP`].
    pub fn run<T, F, Fut>(&self, what: &str, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |c| {
            Box::pin(async move {
                let _ = tx.send(f(c).await);
            })
        });
        self.jobs
            .as_ref()
            .expect("the browser runs")
            .send(job)
            .unwrap_or_else(|_| panic!("{what}: the browser thread is gone"));
        rx.recv_timeout(STEP)
            .unwrap_or_else(|_| panic!("{what}: no answer from the browser within {STEP:?}"))
    }

    /// Saves a screenshot of the page shown now as `<name>.png` among the test artifacts, and
    /// returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.run("screenshot", |c| async move { c.screenshot().await });
        let png = png.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        // Closing the channel ends the loop, which closes the session (bounded by the join
        // below only as long as chromedriver answers; the lab ends it by PID regardless).
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let (done_tx, done_rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = t.join();
                let _ = done_tx.send(());
            });
            let _ = done_rx.recv_timeout(Duration::from_secs(20));
        }
        self.lab.stop(self.driver);
    }
}

/// The text of the element `css` once it is there (waiting up to [`WAIT`]).
pub async fn text_of(c: &Client, css: &str) -> Result<String, fantoccini::error::CmdError> {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(css))
        .await?
        .text()
        .await
}

/// Polls `read` every 200 ms until `done` holds for what it read, up to [`WAIT`]; the last
/// reading either way.
pub async fn until<T, F, Fut>(mut read: F, done: impl Fn(&T) -> bool) -> (bool, T)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = read().await;
        if done(&v) || tokio::time::Instant::now() >= deadline {
            return (done(&v), v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
