//! The dashboard's HTML: the page frame, the sign-in form, the overview's sections and a
//! member's case file. Every value from a document or a request is escaped with
//! [`escape_html`] before it is put into markup.

use amphi_protocol::casefile::CaseFile;
use axum::http::StatusCode;

use crate::members::{self, OpError};
use crate::repo::WriteError;
use crate::state::ApiState;
use crate::status::{PeerState, PeerStatus};

use super::Visit;
use super::labels::*;

/// Most members listed in one search answer.
const SEARCH_LIMIT: usize = 50;
/// Most quarantine entries shown.
const QUARANTINE_LATEST: usize = 5;

/// Escapes text for HTML element content and quoted attribute values: `& < > " '`.
/// Everything that comes from a document or a request goes through this before rendering.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Short alias for templates.
pub(super) fn esc(text: &str) -> String {
    escape_html(text)
}

/// `2026-11-23T10:36:00.123Z` → `2026-11-23 10:36:00`; other text unchanged.
pub(super) fn short_time(t: &str) -> String {
    match (t.get(..10), t.get(10..11), t.get(11..19)) {
        (Some(d), Some("T"), Some(hms)) => format!("{d} {hms}"),
        _ => t.to_owned(),
    }
}

/// The pages a signed-in office moves between, for the bar: path and label.
const NAV: [(&str, Label); 7] = [
    ("/", OVERVIEW),
    ("/dashboard/members/new", NEW_MEMBER),
    ("/dashboard/transfers", TRANSFER_INBOX),
    ("/dashboard/contacts", CONTACTS),
    ("/dashboard/org", ORG_PROFILE),
    ("/dashboard/fleet", SUBTREE),
    ("/dashboard/ledgers", LEDGERS),
];

/// A whole page: head, the office bar with the navigation and the language switch (when
/// signed in) and `main`.
pub(super) fn page(title: &str, office: Option<(&ApiState, &Visit)>, main: &str) -> String {
    let bar = match office {
        Some((s, visit)) => {
            let nav: String = NAV
                .iter()
                .map(|(path, label)| format!(r#"<a href="{path}">{}</a>"#, label.short()))
                .collect();
            format!(
                r#"<header class="bar"><div class="brand">Amphi <span>{RECORD_SYNC}</span></div>
<div class="office">{OFFICE} <b>{org}</b> <span class="muted">{NODE} {node}</span></div>
<nav class="nav">{nav}</nav>{switch}
<form method="post" action="/logout" class="logout">{token}<button type="submit">{SIGN_OUT}</button></form></header>"#,
                org = esc(s.repo.me().as_str()),
                node = esc(&s.node_id),
                switch = language_switch(),
                token = super::forms::token_field(visit),
            )
        }
        None => format!(
            r#"<header class="bar plain">{}</header>"#,
            language_switch()
        ),
    };
    format!(
        r#"<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/dashboard/assets/dashboard.css">
<script src="/dashboard/assets/dashboard.js" defer></script>
</head><body>
{bar}
{main}
</body></html>
"#,
        title = esc(title),
        lang = current().html_lang(),
    )
}

/// Links to the languages this node offers other than the current one; the script adds the
/// page's path as `back`.
fn language_switch() -> String {
    let here = current().code();
    let links: String = languages()
        .iter()
        .filter(|l| l.code != here)
        .map(|l| {
            format!(
                r#"<a class="lang" lang="{code}" href="/dashboard/language?to={code}">{name}</a>"#,
                code = esc(&l.code),
                name = esc(&l.name),
            )
        })
        .collect();
    format!(r#"<div class="languages">{links}</div>"#)
}

pub(super) fn login_page(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e)))
        .unwrap_or_default();
    let main = format!(
        r#"<main class="login-wrap"><form method="post" action="/login" class="card login">
<h1>Amphi <span>{RECORD_SYNC}</span></h1>
<h2>{ADMIN_SIGN_IN}</h2>
{error}
<label for="token">{ADMIN_TOKEN}</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<p class="muted">{TOKEN_HINT}</p>
<button type="submit">{SIGN_IN}</button>
</form></main>"#
    );
    page(&format!("Amphi · {SIGN_IN}"), None, &main)
}

/// The error page for `e` and the status it is served with: what went wrong in the
/// office's words, then the node's own message (the gate's reason for a refusal).
pub(super) fn error_page(s: &ApiState, visit: &Visit, e: &OpError) -> (StatusCode, String) {
    let (status, what) = match e {
        OpError::Write(WriteError::NotFound(_)) => (StatusCode::NOT_FOUND, NO_SUCH_CASE_FILE),
        OpError::Invalid(_) => (StatusCode::BAD_REQUEST, NOT_VALID),
        OpError::Write(WriteError::Forbidden(_)) => (StatusCode::FORBIDDEN, NOT_ALLOWED),
        OpError::Write(WriteError::Conflict(_) | WriteError::Exists(_)) => {
            (StatusCode::CONFLICT, NOT_NOW)
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR),
    };
    let main = format!(
        r#"<main class="grid"><section class="card refused" role="alert"><h2>{what}</h2><p class="error">{}</p><p><a href="/">← {BACK_TO_OVERVIEW}</a></p></section></main>"#,
        esc(&e.to_string())
    );
    (status, page("Amphi", Some((s, visit)), &main))
}

/// The page for a form posted without this session's token (an old page from before a
/// restart, or another site's form).
pub(super) fn stale_form_page(s: &ApiState, visit: &Visit) -> String {
    let main = format!(
        r#"<main class="grid"><section class="card refused" role="alert"><h2>{STALE_FORM}</h2><p><a href="/">← {BACK_TO_OVERVIEW}</a></p></section></main>"#
    );
    page("Amphi", Some((s, visit)), &main)
}

/// A banner saying what a form just did, after its redirect (`?done=KEY`); nothing for a
/// key that is not one of ours.
pub(super) fn done_banner(done: Option<&str>) -> String {
    let label = done
        .and_then(|key| DONE.iter().find(|(k, _)| *k == key))
        .map(|(_, l)| *l);
    label
        .map(|l| format!(r#"<p class="done" role="status">{l}</p>"#))
        .unwrap_or_default()
}

/// An org path with its last segment bold, and "本组织 this office" when it is this office.
pub(super) fn org_html(s: &ApiState, org: &str) -> String {
    let me = if org == s.repo.me().as_str() {
        format!(r#" <span class="me">{THIS_OFFICE}</span>"#)
    } else {
        String::new()
    };
    format!("{}{me}", org_plain(org))
}

/// An org path with its last segment bold, breakable after each `/`.
pub(super) fn org_plain(org: &str) -> String {
    let (above, last) = match org.rsplit_once('/') {
        Some((above, last)) => (format!("{}/<wbr>", esc(above).replace('/', "/<wbr>")), last),
        None => (String::new(), org),
    };
    format!(r#"<span class="org">{above}<b>{}</b></span>"#, esc(last))
}

pub(super) fn member_link(id: &str, name: &str) -> String {
    format!(
        r#"<a href="/dashboard/members/{}">{}</a>"#,
        esc(id),
        esc(name)
    )
}

/// An ID number with all but its last four characters hidden (身份证号 is sensitive).
fn mask_id_number(id: &str) -> String {
    let n = id.chars().count();
    id.chars()
        .enumerate()
        .map(|(i, c)| if i + 4 < n { '•' } else { c })
        .collect()
}

pub(super) fn or_dash(v: Option<&str>) -> String {
    v.filter(|v| !v.is_empty())
        .map_or_else(|| "—".to_owned(), esc)
}

// ---- the overview ---------------------------------------------------------------------------

pub(super) fn render_overview(s: &ApiState, visit: &Visit, query: &str) -> Result<String, OpError> {
    let sync = render_sync(s)?;
    let search = render_search(s, query)?;
    let conflicts = render_conflicts(s, visit)?;
    let quarantine = render_quarantine(s)?;
    let transfers = render_transfers(s)?;
    let bundles = render_bundles(s, visit);
    Ok(format!(
        r#"<main class="grid overview">
<div class="column">
<section id="sync" class="card sync" data-refresh="/dashboard/sync">{sync}</section>
<div class="pair">
<section id="conflicts" class="card">{conflicts}</section>
<section id="transfers" class="card">{transfers}</section>
</div>
<section id="quarantine" class="card">{quarantine}</section>
<section id="bundles" class="card">{bundles}</section>
</div>
<section id="search" class="card search">{search}</section>
</main>"#
    ))
}

/// The bundles section: download one for a neighbour (the parent, peers seen or
/// configured), upload one (dashboard.js sends the file and shows the report).
fn render_bundles(s: &ApiState, visit: &Visit) -> String {
    let me = s.repo.me();
    let mut neighbours: Vec<String> = me.parent().map(|p| p.to_string()).into_iter().collect();
    neighbours.extend(s.peers.iter().map(|p| p.to_string()));
    neighbours.extend(s.status.peers().iter().map(|p| p.org.clone()));
    neighbours.sort();
    neighbours.dedup();
    let options: String = neighbours
        .iter()
        .map(|o| format!(r#"<option value="{o}">{o}</option>"#, o = esc(o)))
        .collect();
    format!(
        r#"<h2>{heading}</h2>
<p class="muted">{BUNDLE_HINT}</p>
<form method="get" action="/dashboard/bundle" class="bundle-export">
<label>{BUNDLE_FOR} <select name="for">{options}</select></label>
<label><input type="checkbox" name="all" value="true"> {BUNDLE_ALL}</label>
<button type="submit">{BUNDLE_DOWNLOAD}</button>
</form>
<div class="bundle-import">
<input type="file" id="bundle-file" accept=".bundle">
<button type="button" id="bundle-import" data-choose="{choose}" data-form-token="{token}">{BUNDLE_IMPORT}</button>
<p id="bundle-result" class="muted" aria-live="polite"></p>
</div>"#,
        heading = BUNDLES.heading(),
        choose = CHOOSE_BUNDLE,
        token = esc(&visit.form_token),
    )
}

/// The sync-status section: office facts, document counts and the peers table.
pub(super) fn render_sync(s: &ApiState) -> Result<String, OpError> {
    let counts = s.repo.store().doc_counts();
    let kind = |k: &str| counts.by_kind.get(k).copied().unwrap_or(0);
    let (members, orgs, conflicts) = (kind("member"), kind("org"), counts.conflicts);
    let refused_total: u64 = s.status.refused().values().sum();
    let quarantine: u64 = s.repo.store().quarantine_totals().values().sum();
    let peers = s.status.peers();
    let rows: String = if peers.is_empty() {
        format!(r#"<tr><td colspan="7" class="muted">{NO_PEERS}</td></tr>"#)
    } else {
        peers.iter().map(|p| peer_row(s, p)).collect()
    };
    let stat = |label: Label, n: String, warn: bool| {
        format!(
            r#"<div class="stat{}"><b>{n}</b><span>{label}</span></div>"#,
            if warn { " warn" } else { "" }
        )
    };
    Ok(format!(
        r#"<h2>{sync_status} <small class="muted">{UPDATED} {now}</small></h2>
<div class="stats">{a}{b}{c}{d}{e}<div class="stat cert"><b>{cert}</b><span>{CERT_EXPIRES}</span></div></div>
<table class="peers"><thead><tr><th>{PEER}</th><th>{STATE}</th><th>{DIRECTION}</th><th>{LAST_SYNC}</th><th class="num">{PENDING}</th><th>{REFUSED}</th><th>{LAST_ERROR}</th></tr></thead>
<tbody>{rows}</tbody></table>"#,
        sync_status = SYNC_STATUS.heading(),
        now = esc(&short_time(&crate::status::now_rfc3339())),
        a = stat(CASE_FILES, members.to_string(), false),
        b = stat(ROSTERS, orgs.to_string(), false),
        c = stat(CONFLICTS, conflicts.to_string(), conflicts > 0),
        d = stat(QUARANTINE, quarantine.to_string(), quarantine > 0),
        e = stat(REFUSED, refused_total.to_string(), refused_total > 0),
        cert = esc(&short_time(&s.cert_expires)
            .chars()
            .take(10)
            .collect::<String>()),
    ))
}

fn peer_row(s: &ApiState, p: &PeerStatus) -> String {
    let direction = direction_label(p.direction);
    let refused = if p.refused.is_empty() {
        "0".to_owned()
    } else {
        p.refused
            .iter()
            .map(|(reason, n)| format!("{} × {n}", esc(reason)))
            .collect::<Vec<_>>()
            .join("<br>")
    };
    format!(
        r#"<tr class="peer {state_class}"><td>{org}<div class="muted small">{addr}</div></td><td>{state}</td><td>{direction}</td><td>{last_sync}</td><td class="num">{pending}</td><td>{refused}</td><td class="error small">{error}</td></tr>"#,
        state_class = match p.state {
            PeerState::Connected => "connected",
            PeerState::Connecting => "connecting",
            PeerState::Disconnected => "disconnected",
        },
        org = org_html(s, &p.org),
        addr = esc(&p.addr),
        state = peer_state(p.state),
        direction = direction,
        last_sync = p
            .last_sync_at
            .as_deref()
            .map_or_else(|| "—".to_owned(), |t| esc(&short_time(t))),
        pending = p.docs_pending,
        error = p.last_error.as_deref().map(esc).unwrap_or_default(),
    )
}

fn render_search(s: &ApiState, query: &str) -> Result<String, OpError> {
    let mut all = members::list(&s.repo, Some(s.repo.me()), false)?;
    all.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    let needle = query.to_lowercase();
    let found: Vec<_> = all
        .iter()
        .filter(|m| {
            needle.is_empty()
                || m.name.to_lowercase().contains(&needle)
                || super::casework::matches_short_code(query, &m.id)
        })
        .collect();
    let heading = if query.is_empty() {
        members_here(all.len())
    } else {
        members_found(&esc(query), found.len())
    };
    let rows: String = found
        .iter()
        .take(SEARCH_LIMIT)
        .map(|m| {
            let residence = m
                .residence_org
                .as_deref()
                .map(|r| {
                    format!(
                        r#"<div class="small">{TWO_DWELLING} → {}</div>"#,
                        org_plain(r)
                    )
                })
                .unwrap_or_default();
            format!(
                r#"<li class="member">{}<div class="small muted">{}</div>{residence}</li>"#,
                member_link(&m.id, &m.name),
                org_plain(&m.home_org),
            )
        })
        .collect();
    let more = if found.len() > SEARCH_LIMIT {
        format!(
            r#"<p class="muted">{}</p>"#,
            more_found(found.len() - SEARCH_LIMIT)
        )
    } else {
        String::new()
    };
    Ok(format!(
        r#"<h2>{member_search}</h2>
<form method="get" action="/" class="search-form" role="search">
<input type="search" name="q" value="{q}" placeholder="{NAME}" aria-label="{NAME}" maxlength="100">
<button type="submit">{SEARCH}</button></form>
<p class="muted small">{heading}</p>
<ul id="results" class="results">{rows}</ul>{more}"#,
        member_search = MEMBER_SEARCH.heading(),
        q = esc(query),
    ))
}

/// The button that acknowledges conflict `id` once the offices have checked the winner.
pub(super) fn ack_form(visit: &Visit, id: &str) -> String {
    format!(
        r#"<form method="post" action="/dashboard/conflicts/{id}/ack" class="ack">{token}<button type="submit">{ACKNOWLEDGE}</button></form>"#,
        id = esc(id),
        token = super::forms::token_field(visit),
    )
}

fn render_conflicts(s: &ApiState, visit: &Visit) -> Result<String, OpError> {
    let list = members::conflicts(&s.repo)?;
    let body = if list.is_empty() {
        format!(r#"<p class="ok">{NO_CONFLICTS}</p>"#)
    } else {
        let rows: String = list
            .iter()
            .map(|c| {
                format!(
                    r#"<tr><td>{}</td><td>{}</td><td class="small">{}</td><td class="small">{}</td><td>{}</td></tr>"#,
                    member_link(&c.member_id, &c.name),
                    esc(&c.conflict.kind),
                    esc(&c.conflict.rule),
                    or_dash(c.conflict.winner.as_deref()),
                    ack_form(visit, &c.conflict.id),
                )
            })
            .collect();
        format!(
            r#"<table><thead><tr><th>{MEMBER}</th><th>{KIND}</th><th>{RULE}</th><th>{WINNER}</th><th></th></tr></thead><tbody>{rows}</tbody></table>"#
        )
    };
    Ok(format!(
        r#"<h2>{} <span class="count">{}</span></h2>{body}"#,
        CONFLICTS.heading(),
        list.len()
    ))
}

fn render_quarantine(s: &ApiState) -> Result<String, OpError> {
    let mut records = s.repo.store().quarantined(QUARANTINE_LATEST)?;
    let by_reason = s.repo.store().quarantine_totals();
    let reasons: String = by_reason
        .iter()
        .map(|(reason, n)| format!(r#"<li><code>{}</code> <b>{n}</b></li>"#, esc(reason)))
        .collect();
    let total: u64 = by_reason.values().sum();
    records.sort_by(|a, b| b.at.cmp(&a.at));
    let latest: String = records
        .iter()
        .take(QUARANTINE_LATEST)
        .map(|r| {
            format!(
                r#"<tr><td class="small">{at}</td><td>{peer}</td><td class="small"><code>{doc}</code></td><td>{author}</td><td class="small" title="{message}"><code>{reason}</code></td></tr>"#,
                at = esc(&short_time(&r.at)),
                peer = esc(&r.peer),
                doc = esc(&r.doc),
                author = or_dash(r.author.as_deref()),
                message = esc(&r.message),
                reason = esc(&r.reason),
            )
        })
        .collect();
    let body = if total == 0 {
        format!(r#"<p class="ok">{NO_REFUSED_CHANGES}</p>"#)
    } else {
        format!(
            r#"<ul class="reasons">{reasons}</ul>
<table><thead><tr><th>{AT}</th><th>{SOURCE_PEER}</th><th>{DOC}</th><th>{CLAIMED_AUTHOR}</th><th>{REASON}</th></tr></thead><tbody>{latest}</tbody></table>"#
        )
    };
    Ok(format!(
        r#"<h2>{} <span class="count">{total}</span></h2>{body}"#,
        QUARANTINE.heading()
    ))
}

fn render_transfers(s: &ApiState) -> Result<String, OpError> {
    let open: Vec<_> = members::list_transfers(&s.repo, None)?
        .into_iter()
        .filter(|t| t.state == "open")
        .collect();
    let body = if open.is_empty() {
        format!(r#"<p class="ok">{NO_OPEN_TRANSFERS}</p>"#)
    } else {
        let rows: String = open
            .iter()
            .map(|t| {
                format!(
                    r#"<tr title="{}"><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                    esc(&t.id),
                    member_link(&t.member_id, &t.name),
                    org_html(s, &t.from_org),
                    org_html(s, &t.to_org),
                )
            })
            .collect();
        format!(
            r#"<table><thead><tr><th>{MEMBER}</th><th>{FROM}</th><th>{TO}</th></tr></thead><tbody>{rows}</tbody></table>"#
        )
    };
    Ok(format!(
        r#"<h2>{} <span class="count">{}</span></h2>{body}"#,
        TRANSFERS.heading(),
        open.len()
    ))
}

// ---- the case file --------------------------------------------------------------------------

pub(super) fn render_case_file(s: &ApiState, visit: &Visit, case: &CaseFile) -> String {
    let dl = |rows: &[(Label, String)]| -> String {
        rows.iter()
            .map(|(label, value)| format!("<dt>{label}</dt><dd>{value}</dd>"))
            .collect()
    };
    let categories = if case.categories.is_empty() {
        "—".to_owned()
    } else {
        case.categories
            .iter()
            .map(|c| format!(r#"<span class="tag">{}</span>"#, category_label(c)))
            .collect()
    };
    let identity = dl(&[
        (GENDER, gender_label(&case.gender)),
        (ETHNICITY, esc(&case.ethnicity)),
        (BORN, esc(&case.birth_date)),
        (JOINED, esc(&case.joined_at)),
        (
            ID_NUMBER,
            case.id_number
                .as_deref()
                .map_or_else(|| "—".to_owned(), |n| esc(&mask_id_number(n))),
        ),
        (PHONE, or_dash(case.phone.as_deref())),
        (EDUCATION, or_dash(case.education.as_deref())),
        (CATEGORIES, categories),
        (FILE_ID, format!("<code>{}</code>", esc(&case.id))),
    ]);
    let residence = match &case.residence {
        Some(r) => dl(&[
            (RESIDENCE, org_html(s, &r.org)),
            (SINCE, or_dash(r.since.as_deref())),
            (UNTIL, or_dash(r.until.as_deref())),
            (REPORTED_IN, or_dash(r.reported_in_at.as_deref())),
        ]),
        None => dl(&[(RESIDENCE, format!("— {NOT_TWO_DWELLING}"))]),
    };
    let contact = case.contact.as_ref();
    let affiliation = format!(
        "{}{residence}{}",
        dl(&[(HOME_ORG, org_html(s, &case.home_org))]),
        dl(&[
            (
                CONTACT_PERSON,
                or_dash(contact.and_then(|c| c.person.as_deref())),
            ),
            (
                LAST_CONTACT,
                or_dash(contact.and_then(|c| c.last_contact_at.as_deref())),
            ),
        ]),
    );

    let activities: String = if case.activities.is_empty() {
        format!(r#"<tr><td colspan="5" class="muted">{NO_ACTIVITIES}</td></tr>"#)
    } else {
        let mut list: Vec<_> = case.activities.iter().collect();
        list.sort_by(|a, b| b.date.cmp(&a.date).then_with(|| a.id.cmp(&b.id)));
        list.iter()
            .map(|a| {
                let comments: String = a
                    .comments
                    .iter()
                    .map(|c| {
                        format!(
                            r#"<div class="comment">{COMMENT} · {} · {}: {}</div>"#,
                            org_html(s, &c.by),
                            esc(&c.at),
                            esc(&c.text)
                        )
                    })
                    .collect();
                format!(
                    r#"<tr class="activity"><td>{date}</td><td>{kind}</td><td>{description}{comments}</td><td class="num">{points}</td><td class="recorded-by">{by}</td></tr>"#,
                    date = esc(&a.date),
                    kind = kind_label(&a.kind),
                    description = esc(&a.description),
                    points = a.points.map(|p| p.to_string()).unwrap_or_default(),
                    by = org_html(s, &a.recorded_by),
                )
            })
            .collect()
    };
    let points: i64 = case.activities.iter().filter_map(|a| a.points).sum();

    let reviews: String = if case.reviews.is_empty() {
        format!(r#"<p class="muted">{NO_REVIEWS}</p>"#)
    } else {
        let rows: String = case
            .reviews
            .iter()
            .map(|r| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&r.period),
                    rating_label(&r.rating),
                    esc(&r.comment),
                    org_html(s, &r.reviewed_by)
                )
            })
            .collect();
        format!(
            r#"<table><thead><tr><th>{PERIOD}</th><th>{RATING}</th><th>{REVIEW_COMMENT}</th><th>{REVIEWED_BY}</th></tr></thead><tbody>{rows}</tbody></table>"#
        )
    };

    let transfers: String = if case.transfers.is_empty() {
        format!(r#"<p class="muted">{NO_TRANSFERS}</p>"#)
    } else {
        case.transfers.iter().map(|t| transfer_html(s, t)).collect()
    };

    let work = super::casework::forms(s, visit, case);
    format!(
        r#"<main class="grid casefile">
<section id="identity" class="card"><h2>{case_file}</h2><h3 class="name">{name}</h3><dl>{identity}</dl>
<p><a class="button" href="/dashboard/members/{id}/certificate">{CERTIFICATE}</a></p></section>
<section id="affiliation" class="card"><h2>{affiliation_heading}</h2><dl>{affiliation}</dl></section>
<section id="reviews" class="card"><h2>{reviews_heading}</h2>{reviews}
<h2>{transfers_heading}</h2>{transfers}</section>
<section id="activities" class="card wide"><h2>{activities_heading} <span class="count">{count}</span> <small class="muted">{POINTS_TOTAL} {points}</small></h2>
<table><thead><tr><th>{DATE}</th><th>{KIND}</th><th>{DESCRIPTION}</th><th class="num">{POINTS}</th><th>{RECORDED_BY}</th></tr></thead><tbody>{activities}</tbody></table></section>
{work}
</main>"#,
        id = esc(&case.id),
        name = esc(&case.name),
        case_file = CASE_FILE.heading(),
        affiliation_heading = AFFILIATION.heading(),
        reviews_heading = REVIEWS.heading(),
        transfers_heading = TRANSFERS.heading(),
        activities_heading = ACTIVITIES.heading(),
        count = case.activities.len(),
    )
}

/// A transfer with its reason and its steps, each with the office and the time.
pub(super) fn transfer_html(s: &ApiState, t: &amphi_protocol::casefile::Transfer) -> String {
    let steps: String = t
        .steps
        .iter()
        .map(|st| {
            let step = serde_json::to_value(st.step)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!(
                r#"<li>{} · {} · {}</li>"#,
                esc(&step),
                org_html(s, &st.by),
                esc(&short_time(&st.at))
            )
        })
        .collect();
    format!(
        r#"<div class="transfer"><div>{from} → {to} {state}</div>
<div class="small">{REASON}: {reason}</div>
<div class="small muted">{OPENED_BY} {by} · {at} · <code>{id}</code></div><ul class="steps">{steps}</ul></div>"#,
        from = org_html(s, &t.from_org),
        to = org_html(s, &t.to_org),
        state = transfer_state_label(&t.state),
        reason = esc(&t.reason),
        by = org_html(s, &t.opened_by),
        at = esc(&short_time(&t.opened_at)),
        id = esc(&t.id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_html_neutralises_markup_and_quotes() {
        assert_eq!(
            escape_html(r#"<script>alert("x")</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
        );
        assert_eq!(
            escape_html("' onmouseover='x' & more"),
            "&#39; onmouseover=&#39;x&#39; &amp; more"
        );
        assert_eq!(
            escape_html("&amp;"),
            "&amp;amp;",
            "escapes are escaped again"
        );
        assert_eq!(escape_html("策勒克·苏 Tsetseg"), "策勒克·苏 Tsetseg");
        let hostile = "\"><img src=x onerror=alert(1)>";
        let out = escape_html(hostile);
        assert!(!out.contains(['<', '>', '"', '\'']), "{out}");
    }

    #[test]
    fn id_numbers_are_masked_and_times_shortened() {
        assert_eq!(mask_id_number("654226197103020021"), "••••••••••••••0021");
        assert_eq!(mask_id_number("12"), "12");
        assert_eq!(
            short_time("2026-11-23T10:36:00.123Z"),
            "2026-11-23 10:36:00"
        );
        assert_eq!(short_time("soon"), "soon");
    }
}
