//! A panic while handling one request costs that request, not the service.
//!
//! Every service that answers the network wraps the handling of each request
//! here: a bug that a packet reaches (a codec trusting a length, an index out
//! of range) then drops that packet, logs it in hex so it can be replayed as a
//! test, counts it in `rackboot_request_panics_total`, and the service keeps
//! serving. Before this, one such packet ended the task, and with it the
//! whole appliance.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};

use futures_util::FutureExt;

use crate::metrics::{Metrics, Service};

/// Runs `handle` on `request` from `peer`; `None` if it panicked.
pub fn request<T>(
    metrics: &Metrics,
    service: Service,
    peer: SocketAddr,
    request: &[u8],
    handle: impl FnOnce() -> T,
) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(handle)) {
        Ok(answer) => Some(answer),
        Err(panic) => {
            report(metrics, service, peer, request, panic.as_ref());
            None
        }
    }
}

/// [`request`] for handling that awaits (a store commit, say).
///
/// A combinator, not an `async fn`: an `async fn` would keep `handle` both
/// as its argument and inside the future it awaits, twice the size of the
/// handling (9 KB for a DHCP request), all of it copied into the heap for
/// every request (the DHCP loop boxes each one before its first poll).
pub fn request_async<'a, T: 'a>(
    metrics: &'a Metrics,
    service: Service,
    peer: SocketAddr,
    request: &'a [u8],
    handle: impl Future<Output = T> + 'a,
) -> impl Future<Output = Option<T>> + 'a {
    AssertUnwindSafe(handle)
        .catch_unwind()
        .map(move |caught| match caught {
            Ok(answer) => Some(answer),
            Err(panic) => {
                report(metrics, service, peer, request, panic.as_ref());
                None
            }
        })
}

fn report(
    metrics: &Metrics,
    service: Service,
    peer: SocketAddr,
    request: &[u8],
    panic: &(dyn std::any::Any + Send),
) {
    let why = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    metrics.request_panicked(service);
    tracing::error!(
        service = service.as_str(),
        %peer,
        packet = %hex(request),
        "handling a request panicked ({why}); it gets no answer and the service goes on. \
         This is a bug in rackboot: please report it with this line"
    );
}

/// `bytes` as hex, to replay the request as a test.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_request_is_counted_and_the_next_is_answered() {
        let metrics = Metrics::new(&[]);
        let peer: SocketAddr = "192.0.2.1:68".parse().unwrap();
        let bad = request(&metrics, Service::Dns, peer, &[1, 2], || -> u8 {
            panic!("index out of range")
        });
        assert_eq!(bad, None);
        let bad = request_async(&metrics, Service::Dhcp, peer, &[3], async {
            tokio::task::yield_now().await;
            let v: Vec<u8> = Vec::new();
            v[usize::from(v.is_empty())]
        })
        .await;
        assert_eq!(bad, None);
        assert_eq!(request(&metrics, Service::Dns, peer, &[], || 7), Some(7));
        let text = metrics.render(crate::metrics::Format::Text).unwrap();
        for service in ["dns", "dhcp"] {
            let line = format!("rackboot_request_panics_total{{service=\"{service}\"}} 1");
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
    }
}
