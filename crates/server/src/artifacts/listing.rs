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
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("limit must be 1..={MAX_PAGE}"),
            )),
        }
    }
}

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

pub async fn list_namespaces(
    State(st): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page<NameItem>>> {
    let q = query(q)?;
    let limit = q.limit()?;
    let items = st
        .index
        .namespaces(&q.prefix, q.cursor.as_deref().unwrap_or(""), limit + 1)
        .await?;
    let items = items.into_iter().map(|name| NameItem { name }).collect();
    Ok(Json(page(items, limit, |i| i.name.clone())))
}

pub async fn list_names(
    State(st): State<AppState>,
    params: Result<Path<NsParams>, PathRejection>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page<NameItem>>> {
    let p = path_params(params)?;
    let q = query(q)?;
    let limit = q.limit()?;
    let namespace = Namespace::parse(&p.namespace)?;
    let items = st
        .index
        .names(
            &namespace,
            &q.prefix,
            q.cursor.as_deref().unwrap_or(""),
            limit + 1,
        )
        .await?;
    let items = items.into_iter().map(|name| NameItem { name }).collect();
    Ok(Json(page(items, limit, |i| i.name.clone())))
}

pub async fn list_versions(
    State(st): State<AppState>,
    params: Result<Path<NameParams>, PathRejection>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Page<VersionInfo>>> {
    let p = path_params(params)?;
    let q = query(q)?;
    let limit = q.limit()?;
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
    let records = st
        .index
        .versions(&namespace, &name, &q.prefix, before, limit + 1)
        .await?;
    let Page { items, next_cursor } = page(records, limit, |v| v.created_seq.to_string());
    Ok(Json(Page {
        items: items.into_iter().map(VersionInfo::from).collect(),
        next_cursor,
    }))
}
