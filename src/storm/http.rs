//! The HTTP half of a boot: iPXE fetching its script, kernel and initrds,
//! then the operational image's agent (boot-assets/image/init) reporting
//! and pulling its config scripts, request for request.
//!
//! Owns the requests and how their failures are named. Scripts are fetched
//! and counted, never run: a storm node reports each as exit 0 with a body
//! saying it did not run it.

use std::future::Future;
use std::time::Duration;

use reqwest::{Client, Response, StatusCode};
use url::Url;

use super::report::Failure;
use super::report::Phase;

/// An HTTP failure: `reason` is the same for every node that failed alike
/// (no MAC, no token in it); `detail` has the URL and the server's words.
#[derive(Debug)]
pub struct HttpFailure {
    pub reason: String,
    pub detail: String,
    /// Whether asking again may help: a timeout, a refused connection, a
    /// 5xx (a server restarting, or one that cannot reach its database).
    /// A 4xx will not change.
    pub passing: bool,
}

impl HttpFailure {
    pub fn into_failure(self, phase: Phase) -> Failure {
        Failure {
            phase,
            reason: self.reason,
            detail: self.detail,
        }
    }
}

/// One client for the whole fleet, without keep-alive: each request is a
/// new connection, as busybox wget in the operational image makes (and as
/// a rack of separate machines would), so the server sees a fleet's worth
/// of connections, not a few pooled ones. No proxy from the environment.
pub fn client(timeout: Duration) -> reqwest::Result<Client> {
    Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .user_agent(concat!("rackboot-storm/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// `what` names the request in the reason (e.g. `GET kernel`).
fn sent_error(what: &str, url: &str, e: reqwest::Error) -> HttpFailure {
    let kind = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        format!("could not connect: {}", root_cause(&e))
    } else {
        root_cause(&e)
    };
    HttpFailure {
        reason: format!("{what}: {kind}"),
        detail: url.to_string(),
        passing: true,
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

async fn check(what: &str, url: &str, resp: Response) -> Result<Response, HttpFailure> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.trim().chars().take(200).collect();
    Err(HttpFailure {
        reason: format!("{what}: HTTP {}", status_text(status)),
        detail: format!("{url}: {body}"),
        passing: status.is_server_error(),
    })
}

fn status_text(s: StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

/// GET `url` as text (a boot script, a script list).
pub async fn get_text(
    http: &Client,
    what: &str,
    url: &Url,
    token: Option<&str>,
) -> Result<String, HttpFailure> {
    let mut req = http.get(url.clone());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| sent_error(what, url.as_str(), e))?;
    let resp = check(what, url.as_str(), resp).await?;
    resp.text()
        .await
        .map_err(|e| sent_error(what, url.as_str(), e))
}

/// GET `url`, streaming the body away; returns its length. A body shorter
/// than its Content-Length is a failure.
pub async fn get_discard(http: &Client, what: &str, url: &Url) -> Result<u64, HttpFailure> {
    let resp = http
        .get(url.clone())
        .send()
        .await
        .map_err(|e| sent_error(what, url.as_str(), e))?;
    let mut resp = check(what, url.as_str(), resp).await?;
    let expected = resp.content_length();
    let mut got = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| sent_error(what, url.as_str(), e))?
    {
        got += chunk.len() as u64;
    }
    if let Some(n) = expected.filter(|&n| n != got) {
        return Err(HttpFailure {
            reason: format!("{what}: body shorter than its Content-Length"),
            detail: format!("{url}: {got} of {n} bytes"),
            passing: false,
        });
    }
    Ok(got)
}

/// The pauses between an agent request's attempts, as init's `http` makes
/// them (HTTP_TRIES=4, 1 s, 2 s, 3 s apart), so a storm meets a server
/// restarting or without its database as a fleet would.
const AGENT_PAUSES: [u64; 3] = [1, 2, 3];

/// The pauses between a boot script's fetches of its kernel and initrds
/// (its `:retry` labels: about 2, 3, 4 and 5 s, less rackboot's per-MAC
/// jitter); the script goes on after that, the storm's phase timeout ends it.
const FETCH_PAUSES: [u64; 4] = [2, 3, 4, 5];

/// `attempt` until it succeeds, fails for good, or has been retried after
/// each of `pauses` (seconds). The phase's timeout still bounds it.
async fn tried<T, F, Fut>(pauses: &[u64], mut attempt: F) -> Result<T, HttpFailure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, HttpFailure>>,
{
    let mut pauses = pauses.iter();
    loop {
        match attempt().await {
            Err(e) if e.passing => match pauses.next() {
                Some(&secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
                None => return Err(e),
            },
            done => return done,
        }
    }
}

/// A kernel or initrd fetched as the boot script fetches it: again after a
/// pause when the server was busy or could not answer.
pub async fn fetch_discard(http: &Client, what: &str, url: &Url) -> Result<u64, HttpFailure> {
    tried(&FETCH_PAUSES, || get_discard(http, what, url)).await
}

/// The operational image's side of rackboot's node endpoints.
pub struct Agent<'a> {
    pub http: &'a Client,
    /// `rackboot.url`, without a trailing slash.
    pub base: String,
    pub mac: String,
    pub token: String,
}

impl Agent<'_> {
    fn url(&self, path_and_query: &str) -> Result<Url, HttpFailure> {
        let s = crate::routes::node(&self.base, &self.mac, path_and_query);
        Url::parse(&s).map_err(|e| HttpFailure {
            reason: format!("rackboot.url on the kernel command line does not make a URL: {e}"),
            detail: s,
            passing: false,
        })
    }

    /// `POST /node/MAC/report?QUERY` with `body`, as init's `report`.
    pub async fn report(&self, what: &str, query: &str, body: String) -> Result<(), HttpFailure> {
        let url = self.url(&format!("/report?{query}"))?;
        tried(&AGENT_PAUSES, || async {
            let resp = self
                .http
                .post(url.clone())
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, "text/plain")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| sent_error(what, url.as_str(), e))?;
            check(what, url.as_str(), resp).await.map(drop)
        })
        .await
    }

    /// GET `url` with the node's token, retried as init does.
    async fn get(&self, what: &str, url: &Url) -> Result<String, HttpFailure> {
        tried(&AGENT_PAUSES, || {
            get_text(self.http, what, url, Some(&self.token))
        })
        .await
    }

    /// `GET /node/MAC/wait` without a generation: the current one, at once.
    pub async fn generation(&self) -> Result<u64, HttpFailure> {
        let what = "GET wait (config generation)";
        let url = self.url("/wait")?;
        let text = self.get(what, &url).await?;
        text.trim().parse().map_err(|_| HttpFailure {
            reason: format!("{what}: not a number"),
            detail: format!("{url}: {:?}", text.chars().take(80).collect::<String>()),
            passing: false,
        })
    }

    /// `GET /node/MAC/scripts`: names, one a line.
    pub async fn script_names(&self) -> Result<Vec<String>, HttpFailure> {
        let url = self.url("/scripts")?;
        let text = self.get("GET scripts", &url).await?;
        Ok(text
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// `GET /node/MAC/scripts/NAME`; returns its size.
    pub async fn script(&self, name: &str) -> Result<u64, HttpFailure> {
        let url = self.url(&format!("/scripts/{}", encode(name)))?;
        let text = self.get("GET script", &url).await?;
        Ok(text.len() as u64)
    }

    /// The whole config pull of init's `run_scripts`, but nothing is run:
    /// generation, list, then each script fetched and reported as exit 0.
    /// Returns the generation and the bytes fetched.
    pub async fn pull_config(&self) -> Result<(u64, u64), HttpFailure> {
        let generation = self.generation().await?;
        let mut bytes = 0;
        for name in self.script_names().await? {
            let size = self.script(&name).await?;
            bytes += size;
            self.report(
                "POST report state=script",
                &format!(
                    "state=script&script={}&status=0&duration_ms=0&generation={generation}",
                    encode(&name)
                ),
                format!("rackboot storm: fetched {size} bytes, did not run it\n"),
            )
            .await?;
        }
        Ok((generation, bytes))
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters, as init's
/// `urlencode` does, so any script name survives a path or a query.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encode_keeps_only_unreserved() {
        assert_eq!(super::encode("10-base.sh"), "10-base.sh");
        assert_eq!(super::encode("a b/c&d"), "a%20b%2Fc%26d");
    }
}
