//! The subtree view (下级组织) at `GET /dashboard/fleet`: what a county or a township sees of
//! the offices below it — the "monthly progress, quarterly inspection" of the users' world,
//! without asking every branch for another spreadsheet.
//!
//! - **The tree.** Every office this node knows of below it (from roster and status
//!   documents, [`crate::fleet::fleet`]), township → its villages, pastoral teams and
//!   communities, each with its last status report: when, how long ago, documents pending
//!   (待同步), case files held, quarantine and conflicts; marked stale (已过期) when the
//!   report is old, or never reported (未报告).
//! - **Activity.** Activity entries in the case files this node holds, counted by the office
//!   that recorded them, for a month (本月 by default, `?month=YYYY-MM` for another) and its
//!   quarter (季度), with points for the quarter; an office with offices below also gets a
//!   subtotal. A table, and an inline SVG bar chart of the quarter (the page's CSP allows no
//!   `style=` and no inline script: the chart is drawn with SVG attributes and CSS classes).
//! - **Conflicts and quarantine**, each with what to do about it, in Chinese and English.
//!
//! The work is bounded for a county of 20,000 case files: one pass over them, reading each
//! once and adding its entries to one table by recording office; the pass runs on a
//! blocking thread.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::AddAssign;

use amphi_protocol::OrgPath;
use amphi_protocol::casefile::Activity;
use amphi_protocol::office::StorageError;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use crate::fleet::{FleetEntry, Report};
use crate::members::{self, ConflictView, OpError};
use crate::repo::WriteError;
use crate::state::ApiState;

use super::labels::{
    CASE_FILES, CLAIMED_AUTHOR, CONFLICTS, KIND, Label, MEMBER, NO_CONFLICTS, NO_REFUSED_CHANGES,
    PENDING, QUARANTINE, REASON, SUBTREE, WINNER,
};
use super::pages::{ack_form, esc, member_link, org_html, org_plain, short_time};
use super::{Visit, visit_or_sign_in};

/// Newest quarantine records read to say which offices each kind of refusal came from.
const QUARANTINE_SAMPLE: usize = 200;
/// Most offices named per refusal reason.
const NAMED_PER_REASON: usize = 5;
/// Deepest indentation the stylesheet has a class for (`subtree-depth-0` … `-5`).
const DEEPEST_INDENT: usize = 5;

const INTRO: Label = Label("subtree.intro");
const OFFICES_BELOW: Label = Label("subtree.offices_below");
const STALE_COUNT: Label = Label("subtree.stale_count");
const LAST_REPORT: Label = Label("subtree.last_report");
const STALE: Label = Label("subtree.stale");
const NEVER_REPORTED: Label = Label("subtree.never_reported");
const NOT_ON_RECORD: Label = Label("subtree.not_on_record");
const AGE_NOW: Label = Label("subtree.age_now");
const AGE_MINUTES: Label = Label("subtree.age_minutes");
const AGE_HOURS: Label = Label("subtree.age_hours");
const AGE_DAYS: Label = Label("subtree.age_days");
const AGE_AHEAD: Label = Label("subtree.age_ahead");
const ACTIVITY: Label = Label("subtree.activity");
const ACTIVITY_HINT: Label = Label("subtree.activity_hint");
const ACTIVITY_IN_MONTH: Label = Label("subtree.activity_in_month");
const ACTIVITY_IN_QUARTER: Label = Label("subtree.activity_in_quarter");
const OFFICE: Label = Label("subtree.office");
const THIS_MONTH: Label = Label("subtree.this_month");
const THIS_QUARTER: Label = Label("subtree.this_quarter");
const THAT_MONTH: Label = Label("subtree.that_month");
const THAT_QUARTER: Label = Label("subtree.that_quarter");
const QUARTER_POINTS: Label = Label("subtree.quarter_points");
const QUARTER_NAME: Label = Label("subtree.quarter_name");
const PREVIOUS_MONTH: Label = Label("subtree.previous_month");
const NEXT_MONTH: Label = Label("subtree.next_month");
const BACK_TO_THIS_MONTH: Label = Label("subtree.back_to_this_month");
const SUBTOTAL: Label = Label("subtree.subtotal");
const CHART: Label = Label("subtree.chart");
const CHART_BAR: Label = Label("subtree.chart_bar");
const WHAT_TO_DO: Label = Label("subtree.what_to_do");
const LATEST_FROM: Label = Label("subtree.latest_from");
const ADVICE_SUPERSEDED: Label = Label("subtree.advice.superseded");
const ADVICE_VOID_DECISION: Label = Label("subtree.advice.void_decision");
const ADVICE_RESIDENCE_VOID: Label = Label("subtree.advice.residence_void");
const ADVICE_CONFLICT: Label = Label("subtree.advice.conflict");
const ADVICE_UNAUTHORISED: Label = Label("subtree.advice.unauthorised");
const ADVICE_FORGED: Label = Label("subtree.advice.forged");
const ADVICE_CERTIFICATE: Label = Label("subtree.advice.certificate");
const ADVICE_DAMAGED: Label = Label("subtree.advice.damaged");
const ADVICE_TRANSFER_RACE: Label = Label("subtree.advice.transfer_race");
const ADVICE_OUT_OF_SCOPE: Label = Label("subtree.advice.out_of_scope");
const ADVICE_QUARANTINE: Label = Label("subtree.advice.quarantine");

// ---- the page ---------------------------------------------------------------------------------

/// `GET /dashboard/fleet?month=YYYY-MM`: which month (and its quarter) the activity counts
/// cover; this month when absent or not a month.
#[derive(Deserialize)]
pub(super) struct FleetQuery {
    month: Option<String>,
}

/// `GET /dashboard/fleet`: the subtree view of a signed-in office.
pub(super) async fn page(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<FleetQuery>,
) -> Response {
    let visit = visit_or_sign_in!(s, headers);
    let this_month = Month::parse(&members::today()).expect("today is a YYYY-MM-DD date");
    let month = q
        .month
        .as_deref()
        .and_then(Month::parse)
        .unwrap_or(this_month);
    let gathered = {
        let s = s.clone();
        tokio::task::spawn_blocking(move || Subtree::gather(&s, month))
            .await
            .unwrap_or_else(|panicked| {
                Err(WriteError::Store(StorageError::Backend(Box::new(panicked))).into())
            })
    };
    visit.respond(&s, || {
        let subtree = gathered?;
        Ok((
            format!("{SUBTREE} · {}", s.repo.me()),
            subtree.render(&s, &visit, this_month),
        ))
    })
}

/// Everything the page shows, read from the store in one go.
struct Subtree {
    /// The month the activity counts cover.
    month: Month,
    /// This office and every office below it.
    tree: OfficeTree,
    /// Each office's latest report, by org.
    fleet: HashMap<String, FleetEntry>,
    /// Activity entries by recording office.
    recorded: HashMap<String, Tally>,
    /// Unacknowledged conflicts.
    conflicts: Vec<ConflictView>,
    /// Refused changes ever quarantined, by reason.
    quarantine: BTreeMap<String, u64>,
    /// By reason, who the newest quarantined changes came from (peer) and claimed to be by.
    quarantine_sources: BTreeMap<String, Sources>,
}

/// Where refused changes of one reason came from.
#[derive(Default)]
struct Sources {
    peers: BTreeSet<String>,
    authors: BTreeSet<String>,
}

impl Subtree {
    /// Reads the fleet, one pass over the case files, the conflicts and the quarantine.
    fn gather(s: &ApiState, month: Month) -> Result<Subtree, OpError> {
        let me = s.repo.me();
        let fleet = crate::fleet::fleet(&s.repo, s.fleet_stale_after)?;
        let mut recorded = HashMap::new();
        for line in members::list(&s.repo, Some(me), false)? {
            match members::get(&s.repo, &line.id) {
                Ok(case) => tally(&mut recorded, month, &case.activities),
                // Gone (or out of scope) since the list was read.
                Err(OpError::Write(WriteError::NotFound(_))) => {}
                Err(e) => return Err(e),
            }
        }
        let offices: Vec<OrgPath> = fleet
            .iter()
            .map(|e| e.org.as_str())
            .chain(recorded.keys().map(String::as_str))
            .filter_map(|org| OrgPath::parse(org).ok())
            .collect();
        let tree = OfficeTree::build(me, &offices);
        let mut quarantine_sources: BTreeMap<String, Sources> = BTreeMap::new();
        for r in s.repo.store().quarantined(QUARANTINE_SAMPLE)? {
            let sources = quarantine_sources.entry(r.reason).or_default();
            sources.peers.insert(r.peer);
            sources.authors.extend(r.author);
        }
        Ok(Subtree {
            month,
            tree,
            fleet: fleet.into_iter().map(|e| (e.org.clone(), e)).collect(),
            recorded,
            conflicts: members::conflicts(&s.repo)?,
            quarantine: s.repo.store().quarantine_totals(),
            quarantine_sources,
        })
    }

    /// The page's `<main>`.
    fn render(&self, s: &ApiState, visit: &Visit, this_month: Month) -> String {
        let totals = self.tree.totals(&self.recorded);
        format!(
            r#"<main class="grid subtree">
<section id="fleet" class="card wide">{tree}</section>
<section id="activity" class="card">{activity}</section>
<section id="activity-chart" class="card">{chart}</section>
<section id="conflicts" class="card">{conflicts}</section>
<section id="quarantine" class="card">{quarantine}</section>
</main>"#,
            tree = self.render_tree(s, &totals),
            activity = self.render_activity(s, &totals, this_month),
            chart = self.render_chart(),
            conflicts = self.render_conflicts(visit),
            quarantine = self.render_quarantine(),
        )
    }

    // ---- the tree ----

    fn render_tree(&self, s: &ApiState, totals: &[Tally]) -> String {
        let below = self.tree.offices.iter().skip(1);
        let known = below.clone().filter(|o| o.listed).count();
        let quiet = below
            .filter(|o| o.listed && self.fleet.get(o.org.as_str()).is_none_or(|e| e.stale))
            .count();
        let stat = |label: String, n: u32, warn: bool| {
            format!(
                r#"<div class="stat{}"><b>{n}</b><span>{label}</span></div>"#,
                if warn { " warn" } else { "" }
            )
        };
        format!(
            r#"<h2>{heading}</h2><p class="muted small">{INTRO}</p>
<div class="stats">{a}{b}{c}{d}</div>
<ul class="subtree-tree">{tree}</ul>"#,
            heading = SUBTREE.heading(),
            a = stat(OFFICES_BELOW.to_string(), count(known), false),
            b = stat(STALE_COUNT.to_string(), count(quiet), quiet > 0),
            c = stat(self.month.fill(ACTIVITY_IN_MONTH), totals[0].month, false),
            d = stat(
                self.month.fill(ACTIVITY_IN_QUARTER),
                totals[0].quarter,
                false
            ),
            tree = self.tree_item(s, 0),
        )
    }

    /// One office and, in a `<details>` open by default, the offices below it.
    fn tree_item(&self, s: &ApiState, i: usize) -> String {
        let office = &self.tree.offices[i];
        let entry = self.fleet.get(office.org.as_str());
        let quiet = office.listed && entry.is_none_or(|e| e.stale);
        let class = if quiet { "office stale" } else { "office" };
        let line = office_line(s, office, entry);
        if office.children.is_empty() {
            return format!(r#"<li class="{class}">{line}</li>"#);
        }
        let below: String = office
            .children
            .iter()
            .map(|&c| self.tree_item(s, c))
            .collect();
        format!(
            r#"<li class="{class}"><details open><summary>{line}</summary><ul>{below}</ul></details></li>"#
        )
    }

    // ---- activity ----

    fn render_activity(&self, s: &ApiState, totals: &[Tally], this_month: Month) -> String {
        let (month_label, quarter_label) = if self.month == this_month {
            (THIS_MONTH, THIS_QUARTER)
        } else {
            (THAT_MONTH, THAT_QUARTER)
        };
        let mut rows = String::new();
        self.activity_rows(s, totals, 0, &mut rows);
        let back = if self.month == this_month {
            String::new()
        } else {
            format!(r#" · <a href="/dashboard/fleet">{BACK_TO_THIS_MONTH}</a>"#)
        };
        format!(
            r#"<h2>{heading} <small class="muted">{month} · {quarter}</small></h2>
<p class="muted small">{ACTIVITY_HINT}</p>
<p class="small"><a href="/dashboard/fleet?month={previous}">← {PREVIOUS_MONTH}</a> · <a href="/dashboard/fleet?month={next}">{NEXT_MONTH} →</a>{back}</p>
<table class="subtree-activity"><thead><tr><th>{OFFICE}</th><th class="num">{month_label}</th><th class="num">{quarter_label}</th><th class="num">{QUARTER_POINTS}</th></tr></thead>
<tbody>{rows}</tbody></table>"#,
            heading = ACTIVITY.heading(),
            month = self.month,
            quarter = esc(&self.month.quarter_name()),
            previous = self.month.previous(),
            next = self.month.next(),
        )
    }

    /// The row of office `i`, the rows of the offices below it, then their subtotal.
    fn activity_rows(&self, s: &ApiState, totals: &[Tally], i: usize, out: &mut String) {
        let office = &self.tree.offices[i];
        let own = self
            .recorded
            .get(office.org.as_str())
            .copied()
            .unwrap_or_default();
        let depth = office.depth.min(DEEPEST_INDENT);
        let row = |class: &str, name: &str, t: Tally| {
            format!(
                r#"<tr class="{class} subtree-depth-{depth}{idle}"><td>{name}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                t.month,
                t.quarter,
                t.quarter_points,
                idle = if t.quarter == 0 { " idle" } else { "" },
            )
        };
        out.push_str(&row("own", &org_html(s, office.org.as_str()), own));
        if office.children.is_empty() {
            return;
        }
        for &c in &office.children {
            self.activity_rows(s, totals, c, out);
        }
        let name = format!("{} {}", org_plain(office.org.as_str()), SUBTOTAL.heading());
        out.push_str(&row("subtotal", &name, totals[i]));
    }

    fn render_chart(&self) -> String {
        let bars: Vec<ChartBar> = self
            .tree
            .preorder()
            .into_iter()
            .map(|i| {
                let office = &self.tree.offices[i];
                ChartBar {
                    org: office.org.to_string(),
                    name: office.org.segments().last().unwrap_or_default().to_owned(),
                    depth: office.depth,
                    count: self
                        .recorded
                        .get(office.org.as_str())
                        .map_or(0, |t| t.quarter),
                }
            })
            .collect();
        let title = self.month.fill(CHART);
        format!(
            r#"<h2>{title}</h2><div class="subtree-chart-box">{}</div>"#,
            bar_chart(&title, &bars)
        )
    }

    // ---- conflicts and quarantine ----

    fn render_conflicts(&self, visit: &Visit) -> String {
        let body = if self.conflicts.is_empty() {
            format!(r#"<p class="ok">{NO_CONFLICTS}</p>"#)
        } else {
            let items: String = self
                .conflicts
                .iter()
                .map(|c| {
                    let winner = c
                        .conflict
                        .winner
                        .as_deref()
                        .map(|w| format!(r#" · {WINNER} <code>{}</code>"#, esc(w)))
                        .unwrap_or_default();
                    format!(
                        r#"<li><div>{MEMBER} {member} · {KIND} <code>{kind}</code>{winner}</div>
<div class="small muted">{rule}</div>
<p class="advice">{advice}</p>
{ack}</li>"#,
                        member = member_link(&c.member_id, &c.name),
                        kind = esc(&c.conflict.kind),
                        rule = esc(&c.conflict.rule),
                        advice = conflict_advice(&c.conflict.kind).heading(),
                        ack = ack_form(visit, &c.conflict.id),
                    )
                })
                .collect();
            format!(r#"<h3>{WHAT_TO_DO}</h3><ul class="subtree-advice">{items}</ul>"#)
        };
        format!(
            r#"<h2>{} <span class="count">{}</span></h2>{body}"#,
            CONFLICTS.heading(),
            self.conflicts.len()
        )
    }

    fn render_quarantine(&self) -> String {
        let total: u64 = self.quarantine.values().sum();
        let body = if total == 0 {
            format!(r#"<p class="ok">{NO_REFUSED_CHANGES}</p>"#)
        } else {
            let items: String = self
                .quarantine
                .iter()
                .map(|(reason, n)| {
                    let sources = self
                        .quarantine_sources
                        .get(reason)
                        .map(|s| {
                            format!(
                                r#"<div class="small">{LATEST_FROM} {}{}</div>"#,
                                named(&s.peers),
                                if s.authors.is_empty() {
                                    String::new()
                                } else {
                                    format!(" · {CLAIMED_AUTHOR} {}", named(&s.authors))
                                }
                            )
                        })
                        .unwrap_or_default();
                    format!(
                        r#"<li><div>{REASON} <code>{reason}</code> <b>{n}</b></div>{sources}<p class="advice">{advice}</p></li>"#,
                        reason = esc(reason),
                        advice = quarantine_advice(reason).heading(),
                    )
                })
                .collect();
            format!(r#"<h3>{WHAT_TO_DO}</h3><ul class="subtree-advice">{items}</ul>"#)
        };
        format!(
            r#"<h2>{} <span class="count">{total}</span></h2>{body}"#,
            QUARANTINE.heading()
        )
    }
}

/// The first few orgs of `orgs`, each as [`org_plain`], and how many more.
fn named(orgs: &BTreeSet<String>) -> String {
    let mut shown: Vec<String> = orgs
        .iter()
        .take(NAMED_PER_REASON)
        .map(|o| org_plain(o))
        .collect();
    if orgs.len() > NAMED_PER_REASON {
        shown.push(format!("+{}", orgs.len() - NAMED_PER_REASON));
    }
    shown.join(", ")
}

/// A count for a stat box (offices are far fewer than `u32::MAX`).
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// An office in the tree: its name, the stale mark, and its last report in brief.
fn office_line(s: &ApiState, office: &TreeOffice, entry: Option<&FleetEntry>) -> String {
    let name = org_html(s, office.org.as_str());
    let mark = |label: Label| format!(r#" <span class="subtree-stale">{label}</span>"#);
    let Some(entry) = entry else {
        let mark = if office.listed {
            mark(NEVER_REPORTED)
        } else {
            format!(r#" <span class="muted small">{NOT_ON_RECORD}</span>"#)
        };
        return format!("{name}{mark}");
    };
    let Some(report) = &entry.report else {
        return format!("{name}{}", mark(NEVER_REPORTED));
    };
    let stale = if entry.stale {
        mark(STALE)
    } else {
        String::new()
    };
    format!(
        r#"{name}{stale} <span class="subtree-facts small">{facts}</span>"#,
        facts = report_facts(report, entry.age_seconds)
    )
}

/// `最近报告 2026-05-14 10:36:00 (3 分钟前) · 待同步 2 · 党员档案 120 · 隔离 0 · 冲突 0`.
fn report_facts(report: &Report, age_seconds: Option<i64>) -> String {
    // A count worth a look is marked (anything pending, quarantined or in conflict).
    let fact = |label: Label, n: usize, mark: bool| {
        format!(
            r#"<span class="fact{}" title="{label}">{} <b>{n}</b></span>"#,
            if mark && n > 0 { " warn" } else { "" },
            label.short(),
        )
    };
    format!(
        r#"<span class="fact" title="{LAST_REPORT}">{} <time>{}</time> ({})</span>{}{}{}{}"#,
        LAST_REPORT.short(),
        esc(&short_time(&report.at)),
        esc(&age_text(age_seconds)),
        fact(PENDING, report.pending, true),
        fact(CASE_FILES, report.members, false),
        fact(QUARANTINE, report.quarantine, true),
        fact(CONFLICTS, report.conflicts, true),
    )
}

/// How long ago a report was written, in the reader's words: `3 分钟前 3 min ago`; never
/// reported when there is no report; "clock ahead" when it is dated more than a minute
/// in the future (the office's clock runs fast).
fn age_text(age_seconds: Option<i64>) -> String {
    let Some(age) = age_seconds else {
        return NEVER_REPORTED.to_string();
    };
    let ago = |label: Label, n: i64| label.fill(&[("n", &n.to_string())]);
    match age {
        ..-60 => AGE_AHEAD.to_string(),
        -60..60 => AGE_NOW.to_string(),
        60..3_600 => ago(AGE_MINUTES, age / 60),
        3_600..86_400 => ago(AGE_HOURS, age / 3_600),
        _ => ago(AGE_DAYS, age / 86_400),
    }
}

/// What to do about a conflict of `kind` (see [`amphi_protocol::affiliation`]).
fn conflict_advice(kind: &str) -> Label {
    match kind {
        "superseded" => ADVICE_SUPERSEDED,
        "accept-void" | "reject-void" | "cancel-void" => ADVICE_VOID_DECISION,
        "residence-void" => ADVICE_RESIDENCE_VOID,
        _ => ADVICE_CONFLICT,
    }
}

/// What to do about changes quarantined for `reason` (a refusal code, see
/// [`amphi_protocol::refusal::Refusal::code`]).
fn quarantine_advice(reason: &str) -> Label {
    match reason {
        "not_home_authority"
        | "not_residence_authority"
        | "not_recorder"
        | "not_in_scope"
        | "stamp_mismatch"
        | "immutable_field"
        | "not_transfer_party"
        | "outside_sender_scope" => ADVICE_UNAUTHORISED,
        "unsigned" | "bad_signature" | "author_mismatch" | "equivocation" | "bad_revocation" => {
            ADVICE_FORGED
        }
        "unknown_certificate" | "certificate_expired" | "revoked" => ADVICE_CERTIFICATE,
        "malformed" | "broken_chain" | "outside_history" | "time" | "unknown_field"
        | "invalid_value" | "unknown_author" | "engine_fault" => ADVICE_DAMAGED,
        "transfer_not_open" | "transfer_already_open" | "depends_on_refused" => {
            ADVICE_TRANSFER_RACE
        }
        "outside_receiver_scope" => ADVICE_OUT_OF_SCOPE,
        _ => ADVICE_QUARANTINE,
    }
}

// ---- months and quarters ------------------------------------------------------------------------

/// A calendar month, the unit of monthly progress (月度); its quarter is the unit of the
/// quarterly inspection (季度).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Month {
    year: u16,
    /// 1 to 12.
    month: u8,
}

/// Where an activity's date falls for a [`Month`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bucket {
    /// In the month (and so in its quarter too).
    Month,
    /// In another month of the same quarter.
    Quarter,
    /// Outside the quarter, or not a date.
    Outside,
}

impl Month {
    /// The month of a `YYYY-MM-DD` date (or anything longer that starts with one) or of a
    /// `YYYY-MM` month; `None` for anything else.
    fn parse(text: &str) -> Option<Month> {
        let b = text.as_bytes();
        let digits = |from: usize, to: usize| {
            b.get(from..to)
                .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
        };
        let shaped = digits(0, 4)
            && b.get(4) == Some(&b'-')
            && digits(5, 7)
            && (b.len() == 7 || (b.get(7) == Some(&b'-') && digits(8, 10)));
        if !shaped {
            return None;
        }
        let year = text[..4].parse().ok()?;
        let month = text[5..7].parse().ok()?;
        (1..=12).contains(&month).then_some(Month { year, month })
    }

    /// 1 to 4.
    fn quarter(self) -> u8 {
        (self.month - 1) / 3 + 1
    }

    /// `2026年第2季度 2026 Q2`.
    fn quarter_name(self) -> String {
        self.fill(QUARTER_NAME)
    }

    /// `label` with `{month}` (`2026-05`), `{year}` and `{q}` (its quarter, 1 to 4) filled.
    fn fill(self, label: Label) -> String {
        label.fill(&[
            ("month", &self.to_string()),
            ("year", &self.year.to_string()),
            ("q", &self.quarter().to_string()),
        ])
    }

    fn previous(self) -> Month {
        match self.month {
            1 => Month {
                year: self.year.saturating_sub(1),
                month: 12,
            },
            m => Month {
                month: m - 1,
                ..self
            },
        }
    }

    fn next(self) -> Month {
        match self.month {
            12 => Month {
                year: self.year.saturating_add(1),
                month: 1,
            },
            m => Month {
                month: m + 1,
                ..self
            },
        }
    }

    /// Where `date` (`YYYY-MM-DD`) falls: in this month, elsewhere in its quarter, or outside.
    fn bucket(self, date: &str) -> Bucket {
        match Month::parse(date) {
            Some(m) if m == self => Bucket::Month,
            Some(m) if m.year == self.year && m.quarter() == self.quarter() => Bucket::Quarter,
            _ => Bucket::Outside,
        }
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Activity entries one office recorded in a month and its quarter.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Tally {
    month: u32,
    quarter: u32,
    quarter_points: i64,
}

impl Tally {
    fn record(&mut self, bucket: Bucket, points: Option<i64>) {
        if bucket == Bucket::Outside {
            return;
        }
        if bucket == Bucket::Month {
            self.month += 1;
        }
        self.quarter += 1;
        self.quarter_points += points.unwrap_or(0);
    }
}

impl AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.month += other.month;
        self.quarter += other.quarter;
        self.quarter_points += other.quarter_points;
    }
}

/// Adds the entries of `activities` dated in `month`'s quarter to their recorders' tallies.
fn tally(by_recorder: &mut HashMap<String, Tally>, month: Month, activities: &[Activity]) {
    for a in activities {
        let bucket = month.bucket(&a.date);
        if bucket == Bucket::Outside {
            continue;
        }
        match by_recorder.get_mut(&a.recorded_by) {
            Some(t) => t.record(bucket, a.points),
            None => {
                let mut t = Tally::default();
                t.record(bucket, a.points);
                by_recorder.insert(a.recorded_by.clone(), t);
            }
        }
    }
}

// ---- the tree of offices ------------------------------------------------------------------------

/// This office and the offices below it, each under the office directly above it. An office
/// known only from a path below it (a village whose township this node has neither a
/// roster nor a report of) is added with `listed: false`, so its villages keep their
/// place and their township's subtotal.
#[derive(Debug)]
struct OfficeTree {
    /// The root (this office) first; every office after the office above it.
    offices: Vec<TreeOffice>,
}

#[derive(Debug)]
struct TreeOffice {
    org: OrgPath,
    /// Named by the list the tree was built from (not only implied by a path below).
    listed: bool,
    parent: Option<usize>,
    /// In org order.
    children: Vec<usize>,
    /// 0 for the root.
    depth: usize,
}

impl OfficeTree {
    /// The tree under `root` of the offices in `listed`; those not at or below `root` are
    /// left out, and a repeat is placed once.
    fn build(root: &OrgPath, listed: &[OrgPath]) -> OfficeTree {
        let mut tree = OfficeTree {
            offices: vec![TreeOffice {
                org: root.clone(),
                listed: false,
                parent: None,
                children: Vec::new(),
                depth: 0,
            }],
        };
        let mut index = HashMap::from([(root.clone(), 0)]);
        for org in listed.iter().filter(|o| root.is_at_or_above(o)) {
            let i = tree.place(&mut index, org);
            tree.offices[i].listed = true;
        }
        let orgs: Vec<OrgPath> = tree.offices.iter().map(|o| o.org.clone()).collect();
        for office in &mut tree.offices {
            office.children.sort_by(|a, b| orgs[*a].cmp(&orgs[*b]));
        }
        tree
    }

    /// The index of `org` (at or below the root), placing it and every office between it
    /// and the nearest one already placed.
    fn place(&mut self, index: &mut HashMap<OrgPath, usize>, org: &OrgPath) -> usize {
        if let Some(&i) = index.get(org) {
            return i;
        }
        let above = org
            .parent()
            .expect("an office below the root has one above it");
        let parent = self.place(index, &above);
        let i = self.offices.len();
        self.offices.push(TreeOffice {
            org: org.clone(),
            listed: false,
            parent: Some(parent),
            children: Vec::new(),
            depth: self.offices[parent].depth + 1,
        });
        self.offices[parent].children.push(i);
        index.insert(org.clone(), i);
        i
    }

    /// Every office, each before the offices below it (the order the page lists them in).
    fn preorder(&self) -> Vec<usize> {
        let mut order = Vec::with_capacity(self.offices.len());
        let mut next = vec![0];
        while let Some(i) = next.pop() {
            order.push(i);
            next.extend(self.offices[i].children.iter().rev());
        }
        order
    }

    /// By index, each office's own tally plus the tallies of every office below it.
    fn totals(&self, own: &HashMap<String, Tally>) -> Vec<Tally> {
        let mut totals: Vec<Tally> = self
            .offices
            .iter()
            .map(|o| own.get(o.org.as_str()).copied().unwrap_or_default())
            .collect();
        // Offices come after the office above them, so walking back sums bottom-up.
        for i in (1..self.offices.len()).rev() {
            if let Some(parent) = self.offices[i].parent {
                let below = totals[i];
                totals[parent] += below;
            }
        }
        totals
    }
}

// ---- the bar chart --------------------------------------------------------------------------

/// One office's bar.
struct ChartBar {
    /// The office's path (the bar's tooltip).
    org: String,
    /// Its last segment (the bar's label).
    name: String,
    /// Below the root, for the label's indent.
    depth: usize,
    /// Entries this quarter.
    count: u32,
}

/// Height of one bar's row, in SVG units (pixels).
const ROW: u32 = 18;
/// Width of the label column.
const LABEL_WIDTH: u32 = 240;
/// Length of the longest bar.
const BAR_MAX: u32 = 320;
/// Room after the longest bar for its number.
const NUMBER_WIDTH: u32 = 56;
/// Longest label, in characters (segments are ASCII, at most 32).
const LABEL_CHARS: usize = 22;

/// A horizontal bar chart, one bar per office in the order given, lengths proportional to
/// the counts, each number written after its bar and each row titled with the office and
/// its count. Drawn with SVG attributes and CSS classes only: the page's CSP forbids
/// `style=`.
fn bar_chart(title: &str, bars: &[ChartBar]) -> String {
    let max = bars.iter().map(|b| b.count).max().unwrap_or(0);
    let width = LABEL_WIDTH + BAR_MAX + NUMBER_WIDTH;
    let height = ROW * bars.len() as u32 + 4;
    let rows: String = bars
        .iter()
        .zip(0u32..)
        .map(|(bar, n)| {
            let y = 2 + n * ROW;
            let length = bar_length(bar.count, max);
            let indent = 4 + 10 * bar.depth.min(DEEPEST_INDENT + 2) as u32;
            let name: String = bar.name.chars().take(LABEL_CHARS).collect();
            format!(
                r##"<g class="bar-row"><title>{tip}</title><text x="{indent}" y="{ty}" class="bar-label">{name}</text><rect class="bar" x="{LABEL_WIDTH}" y="{by}" width="{length}" height="{bh}" fill="#b91c1c"/><text x="{nx}" y="{ty}" class="bar-value">{count}</text></g>"##,
                tip = esc(&format!(
                    "{}: {}",
                    bar.org,
                    CHART_BAR.fill(&[("n", &bar.count.to_string())])
                )),
                ty = y + 12,
                name = esc(&name),
                by = y + 2,
                bh = ROW - 4,
                nx = LABEL_WIDTH + length + 4,
                count = bar.count,
            )
        })
        .collect();
    format!(
        r#"<svg class="subtree-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-labelledby="subtree-chart-title" font-size="12"><title id="subtree-chart-title">{title}</title>{rows}</svg>"#,
        title = esc(title),
    )
}

/// The length of a bar for `count` when `max` gets [`BAR_MAX`]; at least 1 for a count above 0.
fn bar_length(count: u32, max: u32) -> u32 {
    if max == 0 || count == 0 {
        return 0;
    }
    let length = (u64::from(count) * u64::from(BAR_MAX) + u64::from(max) / 2) / u64::from(max);
    (length as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::super::labels::{Language, in_language, languages};
    use super::*;

    fn org(path: &str) -> OrgPath {
        OrgPath::parse(path).unwrap()
    }

    fn orgs(tree: &OfficeTree, indices: &[usize]) -> Vec<String> {
        indices
            .iter()
            .map(|&i| tree.offices[i].org.to_string())
            .collect()
    }

    fn children_of(tree: &OfficeTree, path: &str) -> Vec<String> {
        let office = tree
            .offices
            .iter()
            .find(|o| o.org.as_str() == path)
            .unwrap();
        orgs(tree, &office.children)
    }

    #[test]
    fn the_tree_puts_each_village_under_its_township() {
        let county = org("hoboksar");
        let listed = [
            "hoboksar/chagantolgay/bayin",
            "hoboksar",
            "hoboksar/chagantolgay",
            "hoboksar/hoboksar-town",
            "hoboksar/chagantolgay/altay",
            "hoboksar/hoboksar-town/xingfu",
            "emin/somewhere",        // another county: left out
            "hoboksar/chagantolgay", // a repeat: placed once
        ]
        .map(org);
        let tree = OfficeTree::build(&county, &listed);
        assert_eq!(tree.offices.len(), 6);
        assert_eq!(
            children_of(&tree, "hoboksar"),
            ["hoboksar/chagantolgay", "hoboksar/hoboksar-town"]
        );
        assert_eq!(
            children_of(&tree, "hoboksar/chagantolgay"),
            ["hoboksar/chagantolgay/altay", "hoboksar/chagantolgay/bayin"]
        );
        assert_eq!(
            orgs(&tree, &tree.preorder()),
            [
                "hoboksar",
                "hoboksar/chagantolgay",
                "hoboksar/chagantolgay/altay",
                "hoboksar/chagantolgay/bayin",
                "hoboksar/hoboksar-town",
                "hoboksar/hoboksar-town/xingfu",
            ]
        );
        assert!(tree.offices.iter().all(|o| o.listed));
        let bayin = tree
            .offices
            .iter()
            .find(|o| o.org.as_str().ends_with("bayin"))
            .unwrap();
        assert_eq!(bayin.depth, 2);
    }

    #[test]
    fn an_orphan_village_still_appears_under_its_unlisted_township() {
        let county = org("hoboksar");
        let listed = [
            "hoboksar/tiebukenwusan/team-3/branch-1",
            "hoboksar/chagantolgay",
        ]
        .map(org);
        let tree = OfficeTree::build(&county, &listed);
        let order = orgs(&tree, &tree.preorder());
        assert_eq!(
            order,
            [
                "hoboksar",
                "hoboksar/chagantolgay",
                "hoboksar/tiebukenwusan",
                "hoboksar/tiebukenwusan/team-3",
                "hoboksar/tiebukenwusan/team-3/branch-1",
            ]
        );
        let listed_flags: Vec<bool> = tree
            .preorder()
            .iter()
            .map(|&i| tree.offices[i].listed)
            .collect();
        // The root was not in the list; the offices between it and the orphan are implied.
        assert_eq!(listed_flags, [false, true, false, false, true]);
    }

    #[test]
    fn a_township_node_sees_only_its_own_villages() {
        let township = org("hoboksar/chagantolgay");
        let listed = [
            "hoboksar",
            "hoboksar/chagantolgay/bayin",
            "hoboksar/hoboksar-town/xingfu",
        ]
        .map(org);
        let tree = OfficeTree::build(&township, &listed);
        assert_eq!(
            orgs(&tree, &tree.preorder()),
            ["hoboksar/chagantolgay", "hoboksar/chagantolgay/bayin"]
        );
    }

    #[test]
    fn months_and_quarters_bucket_activity_dates() {
        let may = Month::parse("2026-05-14").unwrap();
        assert_eq!(
            may,
            Month {
                year: 2026,
                month: 5
            }
        );
        assert_eq!(may.quarter(), 2);
        assert_eq!(may.bucket("2026-05-01"), Bucket::Month);
        assert_eq!(may.bucket("2026-05-31"), Bucket::Month);
        assert_eq!(may.bucket("2026-04-30"), Bucket::Quarter);
        assert_eq!(may.bucket("2026-06-30"), Bucket::Quarter);
        assert_eq!(may.bucket("2026-03-31"), Bucket::Outside);
        assert_eq!(may.bucket("2026-07-01"), Bucket::Outside);
        assert_eq!(
            may.bucket("2025-05-14"),
            Bucket::Outside,
            "same month, another year"
        );
        for not_a_date in [
            "",
            "2026-5-14",
            "2026/05/14",
            "2026-13-01",
            "2026-00-10",
            "20260514",
            "2026-05-1x",
        ] {
            assert_eq!(may.bucket(not_a_date), Bucket::Outside, "{not_a_date:?}");
        }
        let quarters: Vec<u8> = (1..=12)
            .map(|month| Month { year: 2026, month }.quarter())
            .collect();
        assert_eq!(quarters, [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]);
        assert_eq!(
            Month::parse("2026-01").unwrap().previous().to_string(),
            "2025-12"
        );
        assert_eq!(
            Month::parse("2026-12").unwrap().next().to_string(),
            "2027-01"
        );
        assert_eq!(may.next().to_string(), "2026-06");
    }

    fn activity(date: &str, by: &str, points: Option<i64>) -> Activity {
        Activity {
            id: format!("a-{date}-{by}"),
            date: date.into(),
            kind: "study".into(),
            description: String::new(),
            points,
            recorded_by: by.into(),
            comments: Vec::new(),
        }
    }

    #[test]
    fn activity_is_counted_by_recording_office_and_summed_up_the_tree() {
        let may = Month::parse("2026-05").unwrap();
        let (bayin, altay, town) = (
            "hoboksar/chagantolgay/bayin",
            "hoboksar/chagantolgay/altay",
            "hoboksar/chagantolgay",
        );
        let mut recorded = HashMap::new();
        // Two case files, read one after the other into the same table.
        tally(
            &mut recorded,
            may,
            &[
                activity("2026-05-02", bayin, Some(5)),
                activity("2026-04-20", bayin, Some(3)),
                activity("2026-03-31", bayin, Some(100)), // last quarter
            ],
        );
        tally(
            &mut recorded,
            may,
            &[
                activity("2026-05-20", bayin, None),
                activity("2026-06-01", altay, Some(2)),
                activity("2026-05-09", town, Some(1)),
            ],
        );
        assert_eq!(
            recorded[bayin],
            Tally {
                month: 2,
                quarter: 3,
                quarter_points: 8
            }
        );
        assert_eq!(
            recorded[altay],
            Tally {
                month: 0,
                quarter: 1,
                quarter_points: 2
            }
        );
        let tree = OfficeTree::build(&org("hoboksar"), &[bayin, altay, town].map(org));
        let totals = tree.totals(&recorded);
        let at = |path: &str| {
            let i = tree
                .offices
                .iter()
                .position(|o| o.org.as_str() == path)
                .unwrap();
            totals[i]
        };
        assert_eq!(
            at(town),
            Tally {
                month: 3,
                quarter: 5,
                quarter_points: 11
            }
        );
        assert_eq!(at("hoboksar"), at(town));
        assert_eq!(at(bayin), recorded[bayin]);
    }

    #[test]
    fn ages_read_as_minutes_hours_and_days_ago() {
        in_language(Language::DEFAULT, || {
            assert_eq!(age_text(Some(180)), "3 分钟前 3 min ago");
            assert_eq!(age_text(Some(59)), "刚刚 just now");
            assert_eq!(age_text(Some(7_300)), "2 小时前 2 h ago");
            assert_eq!(age_text(Some(3 * 86_400 + 5)), "3 天前 3 days ago");
            assert_eq!(age_text(None), "未报告 never reported");
            assert_eq!(age_text(Some(-600)), "时钟超前 clock ahead");
        });
        let english = Language::from_code("en").unwrap();
        in_language(english, || assert_eq!(age_text(Some(180)), "3 min ago"));
    }

    fn bar(name: &str, count: u32) -> ChartBar {
        ChartBar {
            org: format!("hoboksar/{name}"),
            name: name.into(),
            depth: 1,
            count,
        }
    }

    /// The `width` of every `<rect>` in `svg`, in order.
    fn bar_widths(svg: &str) -> Vec<u32> {
        svg.split("<rect")
            .skip(1)
            .map(|r| {
                let w = r.split(" width=\"").nth(1).unwrap();
                w[..w.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn the_chart_draws_bars_in_proportion_with_their_numbers() {
        let bars = [
            bar("bayin", 40),
            bar("altay", 10),
            bar("xingfu", 0),
            bar("<script>", 20),
        ];
        let svg = bar_chart("2026 Q2", &bars);
        assert_eq!(bar_widths(&svg), [BAR_MAX, BAR_MAX / 4, 0, BAR_MAX / 2]);
        for number in [">40</text>", ">10</text>", ">0</text>", ">20</text>"] {
            assert!(svg.contains(number), "{number} missing from {svg}");
        }
        assert!(svg.contains("<title id=\"subtree-chart-title\">2026 Q2</title>"));
        assert_eq!(
            svg.matches("<title>").count(),
            bars.len(),
            "one title per bar"
        );
        assert!(
            svg.contains("hoboksar/bayin"),
            "a bar's title names its office"
        );
        assert!(!svg.contains("style="), "the CSP forbids inline styles");
        assert!(!svg.contains("<script"), "labels are escaped");
        assert!(svg.contains("&lt;script&gt;"));
        let heights: Vec<&str> = svg.split("height=\"").skip(1).take(1).collect();
        assert!(
            heights[0].starts_with(&(ROW * 4 + 4).to_string()),
            "one row per office"
        );
    }

    #[test]
    fn an_empty_quarter_draws_no_bars_and_tiny_counts_stay_visible() {
        let svg = bar_chart("q", &[bar("bayin", 0), bar("altay", 0)]);
        assert_eq!(bar_widths(&svg), [0, 0]);
        assert_eq!(bar_length(1, 10_000), 1);
        assert_eq!(bar_length(5_000, 10_000), BAR_MAX / 2);
    }

    #[test]
    fn every_conflict_and_refusal_has_advice() {
        assert_eq!(conflict_advice("superseded").0, ADVICE_SUPERSEDED.0);
        assert_eq!(conflict_advice("accept-void").0, ADVICE_VOID_DECISION.0);
        assert_eq!(conflict_advice("residence-void").0, ADVICE_RESIDENCE_VOID.0);
        assert_eq!(
            quarantine_advice("not_home_authority").0,
            ADVICE_UNAUTHORISED.0
        );
        assert_eq!(quarantine_advice("bad_signature").0, ADVICE_FORGED.0);
        assert_eq!(quarantine_advice("revoked").0, ADVICE_CERTIFICATE.0);
        assert_eq!(quarantine_advice("something-new").0, ADVICE_QUARANTINE.0);
        in_language(Language::DEFAULT, || {
            let advice = quarantine_advice("not_recorder").to_string();
            assert!(
                advice.contains("联系") && advice.contains("call them"),
                "{advice}"
            );
        });
    }

    #[test]
    fn conflicts_and_quarantine_come_with_what_to_do() {
        let conflict = amphi_protocol::affiliation::Conflict {
            id: "t-0101:superseded".into(),
            transfer_id: "t-0101".into(),
            kind: "superseded".into(),
            rule: "the earliest open transfer stays open".into(),
            winner: Some("t-0202".into()),
        };
        let mut quarantine_sources = BTreeMap::new();
        quarantine_sources.insert(
            "not_recorder".to_owned(),
            Sources {
                peers: BTreeSet::from(["hoboksar/chagantolgay".to_owned()]),
                authors: BTreeSet::from(["hoboksar/chagantolgay/<b>ayin".to_owned()]),
            },
        );
        let subtree = Subtree {
            month: Month::parse("2026-05").unwrap(),
            tree: OfficeTree::build(&org("hoboksar"), &[]),
            fleet: HashMap::new(),
            recorded: HashMap::new(),
            conflicts: vec![ConflictView {
                member_id: "m-0101010101010101".into(),
                name: "阿依古丽".into(),
                conflict,
            }],
            quarantine: BTreeMap::from([
                ("not_recorder".to_owned(), 3),
                ("bad_signature".to_owned(), 1),
            ]),
            quarantine_sources,
        };
        in_language(Language::DEFAULT, || {
            let visit = Visit {
                session: "1.ab".into(),
                language: Language::DEFAULT,
                form_token: "f0f0".into(),
            };
            let conflicts = subtree.render_conflicts(&visit);
            assert!(conflicts.contains(r#"<span class="count">1</span>"#));
            assert!(conflicts.contains("/dashboard/members/m-0101010101010101"));
            assert!(conflicts.contains(r#"action="/dashboard/conflicts/t-0101:superseded/ack""#));
            assert!(conflicts.contains(r#"name="form_token" value="f0f0""#));
            assert!(
                conflicts.contains("Check the winning transfer"),
                "{conflicts}"
            );
            assert!(conflicts.contains("t-0202"));

            let quarantine = subtree.render_quarantine();
            assert!(quarantine.contains(r#"<span class="count">4</span>"#));
            assert!(quarantine.contains("电话联系"), "advice for not_recorder");
            assert!(
                quarantine.contains("possibly a forged node"),
                "advice for bad_signature"
            );
            assert!(quarantine.contains("chagantolgay"), "who sent it");
            assert!(!quarantine.contains("<b>ayin"), "org names are escaped");

            let quiet = Subtree {
                conflicts: Vec::new(),
                quarantine: BTreeMap::new(),
                ..subtree
            };
            assert!(quiet.render_conflicts(&visit).contains("无未确认冲突"));
            assert!(quiet.render_quarantine().contains("没有被拒收的变更"));
        });
    }

    #[test]
    fn every_label_of_the_view_is_in_both_languages() {
        let source = include_str!("subtree.rs");
        let keys: Vec<&str> = source
            .split("Label(\"subtree.")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect();
        assert!(keys.len() > 30, "found only {keys:?}");
        for table in &languages()[..2] {
            let defined: BTreeSet<&str> = table.keys().collect();
            for key in &keys {
                let key = format!("subtree.{key}");
                assert!(defined.contains(key.as_str()), "{} lacks {key}", table.code);
            }
        }
    }
}
