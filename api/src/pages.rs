//! Walking every page of a list (`GET /v1/instances`, `GET /v1/hosts`) with the next page's
//! request already on its way.
//!
//! A zone names the next page's marker in the [`NEXT_MARKER_HEADER`] of each page as well as in
//! its body. The header arrives before the body, so [`Pages`] sends the next page's
//! request as soon as it has it and reads and decodes the page meanwhile: the zone builds page
//! k + 1 while the client decodes page k, where a client that waits for `next_marker` in the body
//! leaves the zone idle for the whole decode. For 10 × 10,000 instances through a parent that is
//! a tenth of the walk's time (docs/benchmarks.md).
//!
//! A zone that sends no header (one from before it) is walked one page after the other, from the
//! body's `next_marker`.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::client::{Client, ClientError};
use crate::types::{HostList, InstanceList};

/// The response header of a list's page naming the next page's marker, the same as the body's
/// `next_marker`; absent on the last page.
pub const NEXT_MARKER_HEADER: &str = "x-next-marker";

/// A page of a list the API pages with `limit` and `marker`.
pub trait Page: DeserializeOwned + Default {
    /// Where the list is read.
    const PATH: &'static str;
    fn next_marker(&self) -> Option<&str>;
    /// Appends `next`'s items to this page's and adds the zones it names unreachable that this
    /// page does not name yet (a zone missing from several pages is named once); the result has
    /// no `next_marker`.
    fn absorb(&mut self, next: Self);
}

impl Page for InstanceList {
    const PATH: &'static str = "/v1/instances";
    fn next_marker(&self) -> Option<&str> {
        self.next_marker.as_deref()
    }
    fn absorb(&mut self, next: Self) {
        self.instances.extend(next.instances);
        add_unreachable(&mut self.unreachable_zones, next.unreachable_zones);
        self.next_marker = None;
    }
}

impl Page for HostList {
    const PATH: &'static str = "/v1/hosts";
    fn next_marker(&self) -> Option<&str> {
        self.next_marker.as_deref()
    }
    fn absorb(&mut self, next: Self) {
        self.hosts.extend(next.hosts);
        add_unreachable(&mut self.unreachable_zones, next.unreachable_zones);
        self.next_marker = None;
    }
}

/// Adds the zones of `more` that `all` does not name yet.
fn add_unreachable(all: &mut Vec<String>, more: Vec<String>) {
    for zone in more {
        if !all.contains(&zone) {
            all.push(zone);
        }
    }
}

/// The pages of one list, in order ([`Client::instance_pages`], [`Client::host_pages`]).
pub struct Pages<P> {
    client: Client,
    /// The query without `marker` (`client_id=…&limit=…`).
    query: String,
    next: Next,
    page: PhantomData<fn() -> P>,
}

/// The pages of an instance list ([`Client::instance_pages`]).
pub type InstancePages = Pages<InstanceList>;
/// The pages of a host list ([`Client::host_pages`]).
pub type HostPages = Pages<HostList>;

enum Next {
    /// The first page, not asked for yet.
    First,
    /// A page asked for (by the header of the page before it): its answer's headers, or why
    /// there are none.
    Sent {
        marker: String,
        answer: Result<reqwest::Response, ClientError>,
    },
    /// A page not asked for yet (the zone sent no header).
    Marker(String),
    Done,
}

impl<P: Page> Pages<P> {
    pub(crate) fn new(client: Client, query: &str) -> Pages<P> {
        Pages { client, query: query.to_owned(), next: Next::First, page: PhantomData }
    }

    /// The next page, `None` after the last one. After an error the walk ends: call again and
    /// it answers `None`.
    pub async fn next(&mut self) -> Option<Result<P, ClientError>> {
        let (marker, answer) = match std::mem::replace(&mut self.next, Next::Done) {
            Next::Done => return None,
            Next::First => (None, self.send(None).await),
            Next::Marker(m) => {
                let answer = self.send(Some(&m)).await;
                (Some(m), answer)
            }
            Next::Sent { marker, answer } => (Some(marker), answer),
        };
        let url = self.client.url(&self.path(marker.as_deref()));
        let page = match answer {
            Ok(resp) => self.page(resp, &url).await,
            Err(e) => Err(e),
        };
        Some(page)
    }

    /// Every page, read into one: the items of all, the zones that did not answer for any.
    pub async fn all(mut self) -> Result<P, ClientError> {
        let mut all = P::default();
        while let Some(page) = self.next().await {
            all.absorb(page?);
        }
        Ok(all)
    }

    /// True when the next page has been asked for already: the last page [`Pages::next`]
    /// answered named its successor in the [`NEXT_MARKER_HEADER`].
    pub fn asked_ahead(&self) -> bool {
        matches!(self.next, Next::Sent { .. })
    }

    /// Reads one answer; sends the next page's request first when the answer names it.
    async fn page(&mut self, resp: reqwest::Response, url: &str) -> Result<P, ClientError> {
        let resp = Client::check(resp, url).await?;
        let announced = resp.headers().get(NEXT_MARKER_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let page: P = match &announced {
            Some(m) => {
                let (page, next) = tokio::join!(self.client.decode(resp, url), self.send(Some(m)));
                self.next = Next::Sent { marker: m.clone(), answer: next };
                page?
            }
            None => self.client.decode(resp, url).await?,
        };
        match (announced.as_deref(), page.next_marker()) {
            (Some(header), Some(body)) if header == body => {}
            (None, Some(body)) => self.next = Next::Marker(body.to_owned()),
            (None, None) => {}
            _ => {
                // Dropping the request sent on the header's word closes its connection.
                self.next = Next::Done;
                return Err(ClientError::Decode {
                    url: url.to_owned(),
                    status: 200,
                    detail: format!(
                        "the page's {NEXT_MARKER_HEADER} header ({announced:?}) and its next_marker ({:?}) differ",
                        page.next_marker()
                    ),
                });
            }
        }
        Ok(page)
    }

    fn path(&self, marker: Option<&str>) -> String {
        let mut path = format!("{}?{}", P::PATH, self.query);
        if let Some(m) = marker {
            if !self.query.is_empty() {
                path.push('&');
            }
            // Encoded: the marker is the zone's word, and must stay one parameter whatever it holds.
            path.push_str("marker=");
            path.extend(url::form_urlencoded::byte_serialize(m.as_bytes()));
        }
        path
    }

    async fn send(&self, marker: Option<&str>) -> Result<reqwest::Response, ClientError> {
        self.client.get_response(&self.path(marker)).await
    }
}
