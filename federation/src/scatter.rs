//! Scatter-gather: ask many children at once with one deadline, and merge their pages.
//!
//! A list across a subtree asks every source (this zone and the children that may hold what is
//! listed) in parallel and waits at most the deadline; children that do not answer in time are
//! reported by name, their items missing, instead of failing or stalling the whole list.
//!
//! Paging stays correct without state between pages. Lists are sorted by id and paged with a
//! marker (the last id of the previous page). Each of `n` sources is asked for about `limit / n`
//! items after the marker ([`per_source_limit`]); a source that has more than it sent is complete
//! only up to the last id it sent, so the merged page stops at the smallest such id ([`merge`]).
//! Every item up to that bound is known, in order, and none is skipped or repeated across pages.
//! Pages may come back shorter than `limit` (never empty while items remain), and the subtree
//! sends about `limit` items per page instead of `n × limit`.

use std::sync::Arc;
use std::time::Duration;

use crate::error::FedError;
use crate::registry::Child;

/// Asks every child with `ask`, all at once, each bounded by `deadline`. Answers come back in the
/// children's order.
pub async fn gather<T, F, Fut>(
    children: &[Arc<Child>],
    deadline: Duration,
    ask: F,
) -> Vec<(Arc<Child>, Result<T, FedError>)>
where
    F: Fn(Arc<Child>) -> Fut,
    Fut: std::future::Future<Output = Result<T, FedError>>,
{
    let calls = children.iter().map(|c| {
        let fut = ask(c.clone());
        let child = c.clone();
        async move {
            let answer = match tokio::time::timeout(deadline, fut).await {
                Ok(a) => a,
                Err(_) => Err(FedError::Timeout { zone: child.name.clone(), after_ms: deadline.as_millis() as u64 }),
            };
            (child, answer)
        }
    });
    futures::future::join_all(calls).await
}

/// How many items to ask each of `sources` for, for a page of `limit`.
pub fn per_source_limit(limit: usize, sources: usize) -> usize {
    if sources <= 1 {
        return limit.max(1);
    }
    // A little more than the fair share, so pages come back nearly full when ids are spread
    // evenly (they are UUIDs).
    let share = limit.div_ceil(sources);
    (share + share / 8 + 1).min(limit).max(1)
}

/// One source's page: its items sorted by id, and whether it has more after them.
#[derive(Debug, Clone)]
pub struct SourcePage<T> {
    pub items: Vec<T>,
    pub more: bool,
}

/// Merges pages by id into one page of at most `limit` items, and its next marker (`None` on the
/// last page). Items with the same id (a zone reachable two ways) appear once.
pub fn merge<T>(pages: Vec<SourcePage<T>>, limit: usize, id: impl Fn(&T) -> &str) -> (Vec<T>, Option<String>) {
    let (items, next, _) = merge_keeping_rest(pages, limit, id);
    (items, next)
}

/// [`merge`], also answering what each source sent beyond the page (its items after the next
/// marker, in order, and whether it has more after them), in the sources' order: what a gateway
/// keeps to serve the next page without asking that source again. On the last page every rest
/// is empty.
pub fn merge_keeping_rest<T>(
    pages: Vec<SourcePage<T>>,
    limit: usize,
    id: impl Fn(&T) -> &str,
) -> (Vec<T>, Option<String>, Vec<SourcePage<T>>) {
    // Complete up to the smallest last id among sources that have more.
    let mut bound: Option<String> = None;
    let mut any_more = false;
    for p in &pages {
        if p.more {
            match p.items.last() {
                Some(last) => {
                    any_more = true;
                    let last = id(last);
                    if bound.as_deref().is_none_or(|b| last < b) {
                        bound = Some(last.to_owned());
                    }
                }
                None => tracing::warn!("a source said it has more items but sent none; treating it as done"),
            }
        }
    }
    let mut rests: Vec<SourcePage<T>> = Vec::with_capacity(pages.len());
    let mut all: Vec<(usize, T)> = Vec::new();
    for (source, page) in pages.into_iter().enumerate() {
        let mut rest = Vec::new();
        for t in page.items {
            if bound.as_deref().is_none_or(|b| id(&t) <= b) {
                all.push((source, t));
            } else {
                rest.push(t);
            }
        }
        rests.push(SourcePage { items: rest, more: page.more });
    }
    all.sort_by(|a, b| id(&a.1).cmp(id(&b.1)));
    all.dedup_by(|a, b| id(&a.1) == id(&b.1));
    let truncated = all.len() > limit;
    // What the page cannot hold goes back to its source, before what lay beyond the bound.
    let cut = if truncated { all.split_off(limit) } else { Vec::new() };
    let next = if truncated || any_more { all.last().map(|(_, t)| id(t).to_owned()) } else { None };
    if next.is_none() {
        rests.iter_mut().for_each(|r| *r = SourcePage { items: Vec::new(), more: false });
    } else {
        let mut back: Vec<Vec<T>> = rests.iter().map(|_| Vec::new()).collect();
        for (source, t) in cut {
            back[source].push(t);
        }
        for (rest, mut back) in rests.iter_mut().zip(back) {
            back.append(&mut rest.items);
            rest.items = back;
        }
    }
    (all.into_iter().map(|(_, t)| t).collect(), next, rests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::CodedError;
    use rand::{Rng, SeedableRng};

    /// What a walk through every page gave: the items in order, the pages, the source asks.
    struct Walk {
        items: Vec<String>,
        pages: usize,
        asked: usize,
    }

    /// Pages through `sources` (each a sorted list of ids) the way a gateway does. With `ahead`,
    /// as a gateway reading ahead: after the first page a source asked is asked for `ahead`
    /// items, and its rest serves the next page while it holds its share (or all it has).
    /// Without, every source is asked for its share on every page.
    fn walk(sources: &[Vec<String>], limit: usize, ahead: Option<usize>) -> Walk {
        let mut walk = Walk { items: Vec::new(), pages: 0, asked: 0 };
        let mut marker: Option<String> = None;
        let mut rests: Vec<Option<SourcePage<String>>> = vec![None; sources.len()];
        loop {
            let per = per_source_limit(limit, sources.len());
            let answers: Vec<SourcePage<String>> = sources
                .iter()
                .zip(rests.iter_mut())
                .map(|(s, rest)| match rest.take() {
                    Some(r) if r.items.len() >= per || !r.more => r,
                    _ => {
                        walk.asked += 1;
                        let after: Vec<String> =
                            s.iter().filter(|i| marker.as_ref().is_none_or(|m| *i > m)).cloned().collect();
                        let n = match (ahead, &marker) {
                            (Some(ahead), Some(_)) => ahead,
                            _ => per,
                        };
                        SourcePage { more: after.len() > n, items: after.into_iter().take(n).collect() }
                    }
                })
                .collect();
            let (items, next, rest) = merge_keeping_rest(answers, limit, |s| s.as_str());
            walk.pages += 1;
            assert!(items.len() <= limit);
            assert!(!items.is_empty() || next.is_none(), "an empty page must be the last");
            for r in &rest {
                assert!(r.items.iter().all(|i| Some(i) > next.as_ref()), "a rest lies after the page");
            }
            walk.items.extend(items);
            marker = next;
            if ahead.is_some() {
                rests = rest.into_iter().map(Some).collect();
            }
            if marker.is_none() {
                return walk;
            }
        }
    }

    /// `n` sources of `per_source` random ids each, sorted, and all their ids in order.
    fn random_sources(rng: &mut rand::rngs::StdRng, n: usize, per_source: usize) -> (Vec<Vec<String>>, Vec<String>) {
        let sources: Vec<Vec<String>> = (0..n)
            .map(|_| {
                let mut v: Vec<String> = (0..per_source).map(|_| format!("{:016x}", rng.gen::<u64>())).collect();
                v.sort();
                v
            })
            .collect();
        let mut all: Vec<String> = sources.iter().flatten().cloned().collect();
        all.sort();
        (sources, all)
    }

    #[test]
    fn every_item_once_in_order_across_pages() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (n_sources, per_source, limit) in [(1, 50, 7), (3, 100, 10), (10, 1000, 100), (4, 0, 5), (2, 3, 1000)] {
            let (sources, expected) = random_sources(&mut rng, n_sources, per_source);
            let w = walk(&sources, limit, None);
            assert_eq!(w.items, expected, "{n_sources} sources × {per_source}, limit {limit}");
            let full_pages = expected.len().div_ceil(limit);
            assert!(w.pages <= full_pages * 2 + 1, "{} pages for {} items of {limit}", w.pages, expected.len());
        }
    }

    #[test]
    fn reading_ahead_pages_every_item_once_and_asks_less() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for (n_sources, per_source, limit) in [(1, 50, 7), (3, 100, 10), (11, 1000, 100), (4, 0, 5), (2, 3, 1000)] {
            let (sources, expected) = random_sources(&mut rng, n_sources, per_source);
            let ahead = walk(&sources, limit, Some(limit));
            assert_eq!(ahead.items, expected, "{n_sources} sources × {per_source}, limit {limit}");
            let plain = walk(&sources, limit, None);
            assert_eq!(plain.asked, plain.pages * n_sources, "without reading ahead: every source, every page");
            if per_source >= 10 * limit / n_sources {
                let (asked, pages) = (ahead.asked, plain.pages);
                assert!(asked * 2 < pages * n_sources, "asked {asked} times for {pages} pages of {n_sources} sources");
            }
        }
        // Duplicates across sources (a diamond) still appear once.
        let a: Vec<String> = (0..40).map(|i| format!("{i:03}")).collect();
        assert_eq!(walk(&[a.clone(), a.clone()], 7, Some(7)).items, a);
    }

    #[test]
    fn skewed_sources_still_page_correctly() {
        // All of one source's ids sort before all of the other's.
        let a: Vec<String> = (0..50).map(|i| format!("a{i:03}")).collect();
        let b: Vec<String> = (0..50).map(|i| format!("b{i:03}")).collect();
        let got = walk(&[b.clone(), a.clone()], 10, None).items;
        let expected: Vec<String> = a.into_iter().chain(b).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn duplicates_appear_once() {
        let p = |ids: &[&str], more| SourcePage { items: ids.iter().map(|s| s.to_string()).collect(), more };
        let (items, next) = merge(vec![p(&["a", "c"], false), p(&["a", "b"], false)], 10, |s| s.as_str());
        assert_eq!(items, ["a", "b", "c"]);
        assert_eq!(next, None);
    }

    #[tokio::test]
    async fn gather_waits_at_most_the_deadline() {
        use crate::registry::tests::child;
        let kids: Vec<Arc<Child>> = vec![Arc::new(child("1", "fast")), Arc::new(child("2", "slow"))];
        let started = tokio::time::Instant::now();
        let answers = gather(&kids, Duration::from_millis(200), |c| async move {
            if c.name == "slow" {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Ok::<_, FedError>(c.name.clone())
        })
        .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(answers[0].1.as_deref(), Ok("fast"));
        assert_eq!(answers[1].1.as_ref().unwrap_err().code(), api::ErrorCode::Timeout);
    }
}
