//! Listings of namespaces, names and versions, paged by cursor.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

impl ListQuery {
    fn limit(&self) -> ApiResult<u32> {
        page_limit(self.limit)
    }
}

fn page_limit(limit: Option<u32>) -> ApiResult<u32> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("limit must be 1..={MAX_PAGE}"),
        )),
    }
}

/// The versions listing's query: a listing's, and `label=KEY=VALUE` (or `label=KEY`:
/// any value) to show only versions labelled so.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionsQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    label: Option<String>,
}

/// Versions a labelled listing reads past before it answers with what it found (maybe
/// nothing) and a cursor where it stopped, so that one request stays bounded however
/// rare the label.
const MAX_SCANNED_VERSIONS: usize = 10_000;

fn page<T>(mut items: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Page<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next_cursor }
}

/// Rows read at a time while filtering a listing down to what a caller may read.
const FILTER_BATCH: u32 = 1000;

/// The prefix to list under: the one asked for, narrowed to what every readable name
/// starts with; `None` when the two exclude each other (nothing can be shown).
fn narrowed(asked: &str, readable: &str) -> Option<String> {
    if asked.starts_with(readable) {
        Some(asked.to_owned())
    } else if readable.starts_with(asked) {
        Some(readable.to_owned())
    } else {
        None
    }
}

/// The first `want` names after `cursor` that `visible` keeps, read from `fetch` (names
/// in order after a cursor) in batches. A caller who may not read everything is shown
/// only what it may read, and a cursor is always a name it was shown, so neither a page
/// nor its cursor ever names what it cannot read.
async fn visible_names<F, Fut>(
    cursor: &str,
    want: u32,
    visible: impl Fn(&str) -> bool,
    fetch: F,
) -> ApiResult<Vec<String>>
where
    F: Fn(String, u32) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, artifactstore_index::Error>>,
{
    let mut shown = Vec::new();
    let mut after = cursor.to_owned();
    loop {
        let batch = fetch(after.clone(), FILTER_BATCH).await?;
        let done = batch.len() < FILTER_BATCH as usize;
        if let Some(last) = batch.last() {
            after = last.clone();
        }
        shown.extend(batch.into_iter().filter(|n| visible(n)));
        if done || shown.len() >= want as usize {
            shown.truncate(want as usize);
            return Ok(shown);
        }
    }
}

pub async fn list_namespaces(
    State(st): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page<NameItem>>> {
    caller.require_anywhere(Permission::Read)?;
    let q = query(q)?;
    let limit = q.limit()?;
    let cursor = q.cursor.as_deref().unwrap_or("");
    let items = if caller.reads_everything() {
        st.index.namespaces(&q.prefix, cursor, limit + 1).await?
    } else {
        match narrowed(&q.prefix, &caller.readable_namespace_prefix()) {
            None => Vec::new(),
            Some(prefix) => {
                visible_names(
                    cursor,
                    limit + 1,
                    |ns| caller.reads_in(ns),
                    |after, n| {
                        let (index, prefix) = (st.index.clone(), prefix.clone());
                        async move { index.namespaces(&prefix, &after, n).await }
                    },
                )
                .await?
            }
        }
    };
    let items = items.into_iter().map(|name| NameItem { name }).collect();
    Ok(Json(page(items, limit, |i| i.name.clone())))
}

pub async fn list_names(
    State(st): State<AppState>,
    caller: Caller,
    params: Result<Path<NsParams>, PathRejection>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<NamesPage>> {
    let p = path_params(params)?;
    caller.require_read_in(&p.namespace)?;
    let q = query(q)?;
    let limit = q.limit()?;
    let namespace = Namespace::parse(&p.namespace)?;
    let cursor = q.cursor.as_deref().unwrap_or("");
    let items = if caller.reads_everything() {
        st.index
            .names(&namespace, &q.prefix, cursor, limit + 1)
            .await?
    } else {
        match narrowed(&q.prefix, &caller.readable_name_prefix(namespace.as_str())) {
            None => Vec::new(),
            Some(prefix) => {
                visible_names(
                    cursor,
                    limit + 1,
                    |name| caller.allows(Permission::Read, namespace.as_str(), name),
                    |after, n| {
                        let (index, prefix, ns) =
                            (st.index.clone(), prefix.clone(), namespace.clone());
                        async move { index.names(&ns, &prefix, &after, n).await }
                    },
                )
                .await?
            }
        }
    };
    let items = items.into_iter().map(|name| NameItem { name }).collect();
    let used = st.index.usage(namespace.as_str()).await?;
    let quota = st
        .config
        .quotas
        .for_namespace(namespace.as_str())
        .unwrap_or_default();
    Ok(Json(NamesPage {
        page: page(items, limit, |i| i.name.clone()),
        usage: NamespaceUsage {
            bytes: used.bytes,
            versions: used.versions,
            max_bytes: quota.max_bytes,
            max_versions: quota.max_versions,
        },
    }))
}

pub async fn list_versions(
    State(st): State<AppState>,
    caller: Caller,
    params: Result<Path<NameParams>, PathRejection>,
    q: Result<Query<VersionsQuery>, QueryRejection>,
) -> ApiResult<Json<Page<VersionInfo>>> {
    let p = path_params(params)?;
    caller.require(Permission::Read, &p.namespace, &p.name)?;
    let q = query(q)?;
    let limit = page_limit(q.limit)?;
    let namespace = Namespace::parse(&p.namespace)?;
    let name = Name::parse(&p.name)?;
    let before = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "cursor is not one this server issued",
            )
        })?),
    };
    let Page { items, next_cursor } = match q.label.as_deref().filter(|l| !l.is_empty()) {
        None => {
            let records = st
                .index
                .versions(&namespace, &name, &q.prefix, before, limit + 1)
                .await?;
            page(records, limit, |v| v.created_seq.to_string())
        }
        Some(label) => {
            let (key, value) = match label.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (label, None),
            };
            let labelled = |v: &VersionRecord| {
                v.labels
                    .get(key)
                    .is_some_and(|found| value.is_none_or(|want| found == want))
            };
            let mut shown = Vec::new();
            let (mut before, mut scanned) = (before, 0);
            loop {
                let batch = st
                    .index
                    .versions(&namespace, &name, &q.prefix, before, FILTER_BATCH)
                    .await?;
                let done = batch.len() < FILTER_BATCH as usize;
                scanned += batch.len();
                if let Some(last) = batch.last() {
                    before = Some(last.created_seq);
                }
                shown.extend(batch.into_iter().filter(|v| labelled(v)));
                if shown.len() > limit as usize || done {
                    break page(shown, limit, |v| v.created_seq.to_string());
                }
                if scanned >= MAX_SCANNED_VERSIONS {
                    // A cursor past what was read, so the next page goes on from there.
                    break Page {
                        items: shown,
                        next_cursor: before.map(|b| b.to_string()),
                    };
                }
            }
        }
    };
    Ok(Json(Page {
        items: items.into_iter().map(VersionInfo::from).collect(),
        next_cursor,
    }))
}
