//! The fleet page: every node in a table, grouped by state, filtered by
//! state, label selector, rack, bootenv or a piece of MAC or hostname, a
//! page of [`PAGE`] rows at a time; the counts per state on top. The table
//! (`fleet_rows.html`) is fetched again whenever the fleet changes
//! ([`super::live`]), so it stays current without a reload.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use minijinja::{Value, context};
use serde::{Deserialize, Serialize};

use super::{PartViewer, Viewer, bootenv_names, given, query_value};
use crate::http::{HttpContext, HttpError};
use crate::model::{LabelSelector, Mac, Node, NodeState, Timestamp};
use crate::routes::console as path;

/// Rows per page: a thousand nodes is ten pages, each rendered in a blink.
pub const PAGE: usize = 100;

/// The filters, as the page's form and links send them.
#[derive(Debug, Default, Deserialize)]
pub struct FleetQuery {
    state: Option<String>,
    /// A label selector (`role=builder,rack!=r9`).
    label: Option<String>,
    /// The `rack` label.
    rack: Option<String>,
    /// The bootenv or next-boot bootenv.
    bootenv: Option<String>,
    /// A piece of the MAC or hostname.
    q: Option<String>,
    /// From 1.
    page: Option<usize>,
}

/// The filters, checked.
struct Filter {
    state: Option<NodeState>,
    label: Option<LabelSelector>,
    rack: Option<String>,
    bootenv: Option<String>,
    q: Option<String>,
}

impl Filter {
    fn parse(f: &FleetQuery) -> Result<Filter, HttpError> {
        let state = given(&f.state)
            .map(|s| {
                s.parse::<NodeState>()
                    .map_err(|e| HttpError::bad_request(e.to_string()))
            })
            .transpose()?;
        let label = given(&f.label)
            .map(|s| {
                s.parse::<LabelSelector>()
                    .map_err(|e| HttpError::bad_request(e.to_string()))
            })
            .transpose()?;
        Ok(Filter {
            state,
            label,
            rack: given(&f.rack).map(str::to_string),
            bootenv: given(&f.bootenv).map(str::to_string),
            q: given(&f.q).map(str::to_ascii_lowercase),
        })
    }

    /// Whether `n` passes every filter but the state (the counts on top
    /// are those of each state among these).
    fn matches_but_state(&self, n: &Node) -> bool {
        self.label.as_ref().is_none_or(|s| s.matches(&n.labels))
            && self
                .rack
                .as_ref()
                .is_none_or(|r| n.labels.get("rack") == Some(r))
            && self
                .bootenv
                .as_ref()
                .is_none_or(|b| &n.bootenv == b || n.next_bootenv.as_ref() == Some(b))
            && self.q.as_ref().is_none_or(|q| {
                n.hostname.to_ascii_lowercase().contains(q.as_str())
                    || n.mac.to_string().contains(q.as_str())
            })
    }
}

/// One row of the table.
#[derive(Serialize)]
struct Row {
    mac: String,
    hostname: String,
    address: Option<String>,
    state: &'static str,
    state_reason: Option<String>,
    bootenv: String,
    next_bootenv: Option<String>,
    expires: Option<String>,
    last_seen: Option<String>,
    protected: bool,
    rack: Option<String>,
}

/// A state's place in the lifecycle's order ([`NodeState::ALL`]).
fn order(s: NodeState) -> usize {
    NodeState::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

/// The counts, the rows of one page, and the links to the others.
async fn view(ctx: &HttpContext, q: &FleetQuery) -> Result<Value, HttpError> {
    let filter = Filter::parse(q)?;
    // One pass over the records where the store keeps them: the counts, and
    // the sort keys of the rows shown; only a page of records is copied.
    let mut counts = [0usize; NodeState::ALL.len()];
    let mut shown: Vec<(usize, String, Mac)> = Vec::new();
    ctx.control.visit_nodes(&mut |n| {
        if filter.matches_but_state(n) {
            counts[order(n.state)] += 1;
            if filter.state.is_none_or(|s| s == n.state) {
                shown.push((order(n.state), n.hostname.clone(), n.mac));
            }
        }
    });
    // Grouped by state, in the lifecycle's order; by hostname within.
    shown.sort_unstable();
    let pages = shown.len().div_ceil(PAGE).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let mut rows = Vec::new();
    for (_, _, mac) in shown.iter().skip((page - 1) * PAGE).take(PAGE) {
        // Gone since the pass: the next refresh leaves it out.
        let Some(n) = ctx.control.node(*mac).await? else {
            continue;
        };
        let address = match n.ipv4 {
            Some(ip) => Some(ip),
            None => ctx.control.address_of(n.mac).await?,
        };
        rows.push(Row {
            mac: n.mac.to_string(),
            address: address.map(|a| a.to_string()),
            state: n.state.as_str(),
            expires: n.bootenv_expires.map(|t| t.to_string()),
            last_seen: n.last_seen.map(|t| t.to_string()),
            protected: n.protected,
            rack: n.labels.get("rack").cloned(),
            hostname: n.hostname,
            state_reason: n.state_reason,
            bootenv: n.bootenv,
            next_bootenv: n.next_bootenv,
        });
    }
    let states: Vec<Value> = NodeState::ALL
        .iter()
        .map(|s| {
            context! {
                name => s.as_str(),
                count => counts[order(*s)],
                link => link(q, Some(s.as_str()), None),
                current => filter.state == Some(*s),
            }
        })
        .collect();
    Ok(context! {
        states,
        total => counts.iter().sum::<usize>(),
        all_link => link(q, Some(""), None),
        rows,
        shown => shown.len(),
        page,
        pages,
        prev => (page > 1).then(|| link(q, None, Some(page - 1))),
        next => (page < pages).then(|| link(q, None, Some(page + 1))),
        // What the live script fetches again: this very view.
        rows_url => format!("{}{}", path::path(path::FLEET_ROWS), query(q, None, Some(page))),
        now => Timestamp::now().to_string(),
    })
}

/// The query string of `q` with its state (`Some("")`: any) or page changed.
fn query(q: &FleetQuery, state: Option<&str>, page: Option<usize>) -> String {
    let state = state.or(given(&q.state));
    let page = page.map(|p| p.to_string());
    let pairs = [
        ("state", state),
        ("label", given(&q.label)),
        ("rack", given(&q.rack)),
        ("bootenv", given(&q.bootenv)),
        ("q", given(&q.q)),
        ("page", page.as_deref()),
    ];
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", query_value(v)))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The fleet page with the filters changed.
fn link(q: &FleetQuery, state: Option<&str>, page: Option<usize>) -> String {
    format!("{}{}", path::path(path::FLEET), query(q, state, page))
}

/// `GET /console`.
pub async fn page(
    State(ctx): State<Arc<HttpContext>>,
    v: Viewer,
    Query(q): Query<FleetQuery>,
) -> Response {
    let form = context! {
        state => given(&q.state),
        label => given(&q.label),
        rack => given(&q.rack),
        bootenv => given(&q.bootenv),
        q => given(&q.q),
    };
    let bootenvs = bootenv_names(&ctx);
    let bulk_link =
        given(&q.label).map(|l| format!("{}?selector={}", path::path(path::BULK), query_value(l)));
    let view = view(&ctx, &q)
        .await
        .map(|rows| context! { nav => "fleet", form, bootenvs, bulk_link, ..rows });
    v.show("fleet.html", view)
}

/// `GET /console/fleet`: the counts and the table alone, for the live script.
pub async fn rows(
    State(ctx): State<Arc<HttpContext>>,
    v: PartViewer,
    Query(q): Query<FleetQuery>,
) -> Response {
    v.show("fleet_rows.html", view(&ctx, &q).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(label: &str, page: Option<usize>) -> FleetQuery {
        FleetQuery {
            label: Some(label.into()),
            q: Some(" ".into()),
            page,
            ..FleetQuery::default()
        }
    }

    #[test]
    fn links_keep_the_filters_and_drop_blanks() {
        assert_eq!(
            link(&q("rack=r1", Some(3)), Some("booting"), None),
            "/console?state=booting&label=rack%3Dr1"
        );
        assert_eq!(
            link(&q("rack=r1", None), None, Some(2)),
            "/console?label=rack%3Dr1&page=2"
        );
        let any_state = FleetQuery {
            state: Some("failed".into()),
            ..FleetQuery::default()
        };
        assert_eq!(link(&any_state, Some(""), None), "/console");
    }

    #[test]
    fn a_bad_filter_is_refused_with_its_reason() {
        let bad = FleetQuery {
            state: Some("asleep".into()),
            ..FleetQuery::default()
        };
        let e = Filter::parse(&bad).err().unwrap();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
    }
}
