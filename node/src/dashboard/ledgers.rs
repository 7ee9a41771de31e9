//! The ledgers (台账) an office keeps for inspections, made from its case files instead of
//! by hand: each one downloads as an Excel workbook (XLSX) or as CSV (UTF-8 with a BOM, so
//! Excel shows the Chinese), with column headers in the reader's language.
//!
//! | route | what |
//! |---|---|
//! | `GET /dashboard/ledgers?from=&to=` | the three ledgers with their row counts and download links; a form for the activity ledger's period (default: the current half-year) |
//! | `GET /dashboard/ledgers/{file}?from=&to=` | one ledger as a file: `roster`, `two-dwelling` or `activities`, then `.xlsx` or `.csv` |
//!
//! The ledgers and their columns, for the members whose home or residence is this office or
//! below:
//!
//! - roster (党员名册): name, gender, ethnicity, birth date, date joined, education, phone,
//!   categories, home org, residence org — sorted by home org, then name;
//! - two-dwelling register (两栖党员登记册): name, home org, residence org, residing since,
//!   residing until, reported-in date, contact person, last contact;
//! - activity ledger (活动台账): every activity entry dated within `from`..=`to` — member,
//!   date, kind, description, points, recording org — sorted by date.
//!
//! The ID number (身份证号) is sensitive and is in no ledger. A download needs a session
//! (401 without); a bad period is a 400 that says what to write; a ledger of more than
//! [`MAX_ROWS`] rows is refused. Files are made off the async threads, one at a time.
//!
//! A CSV cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a
//! leading `'`, so a spreadsheet does not run it as a formula; XLSX cells are written as
//! strings, which a spreadsheet never runs.

use amphi_protocol::OrgPath;
use amphi_protocol::casefile::{Activity, CaseFile};
use amphi_protocol::office::StorageError;
use amphi_protocol::validate::{self, FieldError};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_xlsxwriter::{Format, Workbook, XlsxError};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::members::{self, MemberLine, OpError};
use crate::repo::WriteError;
use crate::state::ApiState;

use super::labels::{
    BORN, CATEGORIES, CONTACT_PERSON, DATE, DESCRIPTION, EDUCATION, ETHNICITY, GENDER, HOME_ORG,
    INTERNAL_ERROR, JOINED, KIND, LAST_CONTACT, Label, Language, NAME, PHONE, POINTS, RECORDED_BY,
    in_language, value_text,
};
use super::pages::esc;
use super::{Visit, visit_or_sign_in};

/// Most rows one ledger may have, which bounds the memory a download takes (a few hundred
/// MB at most): ten times a county's roster (20,000 members); an activity ledger past it
/// needs a shorter period. Excel's own limit is 1,048,575 rows below the header.
const MAX_ROWS: usize = 200_000;
/// Longest text in one XLSX cell (Excel's limit).
const MAX_CELL_CHARS: usize = 32_767;
/// Makes ledgers one at a time: a county's ledger reads every case file, and the node has
/// few cores that sync needs too.
static MAKING: Semaphore = Semaphore::const_new(1);

const TITLE: Label = Label("ledger.title");
const INTRO: Label = Label("ledger.intro");
const NO_ID_NUMBERS: Label = Label("ledger.no_id_numbers");
const LEDGER: Label = Label("ledger.ledger");
const ROWS: Label = Label("ledger.rows");
const DOWNLOAD: Label = Label("ledger.download");
const ROSTER: Label = Label("ledger.roster");
const ROSTER_HINT: Label = Label("ledger.roster_hint");
const TWO_DWELLING_REGISTER: Label = Label("ledger.two_dwelling");
const TWO_DWELLING_HINT: Label = Label("ledger.two_dwelling_hint");
const ACTIVITY_LEDGER: Label = Label("ledger.activities");
const ACTIVITY_HINT: Label = Label("ledger.activities_hint");
const PERIOD_FROM: Label = Label("ledger.from");
const PERIOD_TO: Label = Label("ledger.to");
const SHOW: Label = Label("ledger.show");
const RESIDENCE_ORG: Label = Label("ledger.residence_org");
const RESIDING_SINCE: Label = Label("ledger.since");
const RESIDING_UNTIL: Label = Label("ledger.until");
const REPORTED_IN_ON: Label = Label("ledger.reported_in");
const BAD_PERIOD: Label = Label("ledger.bad_period");
const TOO_MANY_ROWS: Label = Label("ledger.too_many_rows");

// ---- the ledgers ---------------------------------------------------------------------------

/// One of the ledgers an office keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ledger {
    /// 党员名册.
    Roster,
    /// 两栖党员登记册.
    TwoDwelling,
    /// 活动台账, for a period.
    Activities,
}

/// One column of a ledger: its header (a [`Label`], then its text in the reader's language),
/// its width in Excel's character units, and whether long text wraps.
#[derive(Clone, Debug, PartialEq)]
struct Column<H> {
    header: H,
    width: f64,
    wrap: bool,
}

const fn column(header: Label, width: f64) -> Column<Label> {
    Column {
        header,
        width,
        wrap: false,
    }
}

const ROSTER_COLUMNS: &[Column<Label>] = &[
    column(NAME, 10.0),
    column(GENDER, 6.0),
    column(ETHNICITY, 8.0),
    column(BORN, 12.0),
    column(JOINED, 12.0),
    column(EDUCATION, 10.0),
    column(PHONE, 15.0),
    column(CATEGORIES, 24.0),
    column(HOME_ORG, 36.0),
    column(RESIDENCE_ORG, 36.0),
];

const TWO_DWELLING_COLUMNS: &[Column<Label>] = &[
    column(NAME, 10.0),
    column(HOME_ORG, 36.0),
    column(RESIDENCE_ORG, 36.0),
    column(RESIDING_SINCE, 12.0),
    column(RESIDING_UNTIL, 12.0),
    column(REPORTED_IN_ON, 12.0),
    column(CONTACT_PERSON, 12.0),
    column(LAST_CONTACT, 12.0),
];

/// Where the date is in an activity row (the ledger is sorted by it).
const ACTIVITY_DATE: usize = 1;

const ACTIVITY_COLUMNS: &[Column<Label>] = &[
    column(NAME, 10.0),
    column(DATE, 12.0),
    column(KIND, 12.0),
    Column {
        header: DESCRIPTION,
        width: 50.0,
        wrap: true,
    },
    column(POINTS, 7.0),
    column(RECORDED_BY, 36.0),
];

impl Ledger {
    const ALL: [Ledger; 3] = [Ledger::Roster, Ledger::TwoDwelling, Ledger::Activities];

    /// Its name in URLs and ASCII file names.
    fn slug(self) -> &'static str {
        match self {
            Ledger::Roster => "roster",
            Ledger::TwoDwelling => "two-dwelling",
            Ledger::Activities => "activities",
        }
    }

    fn title(self) -> Label {
        match self {
            Ledger::Roster => ROSTER,
            Ledger::TwoDwelling => TWO_DWELLING_REGISTER,
            Ledger::Activities => ACTIVITY_LEDGER,
        }
    }

    fn hint(self) -> Label {
        match self {
            Ledger::Roster => ROSTER_HINT,
            Ledger::TwoDwelling => TWO_DWELLING_HINT,
            Ledger::Activities => ACTIVITY_HINT,
        }
    }

    fn columns(self) -> &'static [Column<Label>] {
        match self {
            Ledger::Roster => ROSTER_COLUMNS,
            Ledger::TwoDwelling => TWO_DWELLING_COLUMNS,
            Ledger::Activities => ACTIVITY_COLUMNS,
        }
    }

    /// The columns with their headers in the current language.
    fn headers(self) -> Vec<Column<String>> {
        self.columns()
            .iter()
            .map(|c| Column {
                header: c.header.short().to_owned(),
                width: c.width,
                wrap: c.wrap,
            })
            .collect()
    }

    /// This member's rows in the ledger, values in the current language.
    fn rows_of(self, case: &CaseFile, period: &DateRange) -> Vec<Row> {
        match self {
            Ledger::Roster => vec![roster_row(case)],
            Ledger::TwoDwelling => two_dwelling_row(case).into_iter().collect(),
            Ledger::Activities => period
                .activities_of(case)
                .map(|a| activity_row(case, a))
                .collect(),
        }
    }
}

/// The file formats a ledger downloads as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileType {
    Xlsx,
    Csv,
}

impl FileType {
    const ALL: [FileType; 2] = [FileType::Xlsx, FileType::Csv];

    fn extension(self) -> &'static str {
        match self {
            FileType::Xlsx => "xlsx",
            FileType::Csv => "csv",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            FileType::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            FileType::Csv => "text/csv; charset=utf-8",
        }
    }

    fn write(self, sheet: Sheet) -> Result<Vec<u8>, LedgerError> {
        match self {
            FileType::Xlsx => Ok(xlsx(sheet)?),
            FileType::Csv => Ok(csv(&sheet)),
        }
    }
}

/// The ledger and format a download's file name asks for: `roster.xlsx` … `activities.csv`.
fn parse_file(file: &str) -> Option<(Ledger, FileType)> {
    let (slug, extension) = file.split_once('.')?;
    let ledger = Ledger::ALL.into_iter().find(|l| l.slug() == slug)?;
    let format = FileType::ALL
        .into_iter()
        .find(|f| f.extension() == extension)?;
    Some((ledger, format))
}

// ---- rows ----------------------------------------------------------------------------------

/// One cell of a ledger.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Cell {
    Text(String),
    Number(i64),
}

type Row = Vec<Cell>;

fn text(value: &str) -> Cell {
    Cell::Text(value.to_owned())
}

fn maybe(value: Option<&str>) -> Cell {
    text(value.unwrap_or_default())
}

fn roster_row(case: &CaseFile) -> Row {
    let categories: Vec<String> = case
        .categories
        .iter()
        .map(|c| value_text("category", c))
        .collect();
    vec![
        text(&case.name),
        Cell::Text(value_text("gender", &case.gender)),
        text(&case.ethnicity),
        text(&case.birth_date),
        text(&case.joined_at),
        maybe(case.education.as_deref()),
        maybe(case.phone.as_deref()),
        Cell::Text(categories.join(" / ")),
        text(&case.home_org),
        maybe(case.residence.as_ref().map(|r| r.org.as_str())),
    ]
}

/// The register's row for a member with a residence assignment.
fn two_dwelling_row(case: &CaseFile) -> Option<Row> {
    let residence = case.residence.as_ref()?;
    let contact = case.contact.as_ref();
    Some(vec![
        text(&case.name),
        text(&case.home_org),
        text(&residence.org),
        maybe(residence.since.as_deref()),
        maybe(residence.until.as_deref()),
        maybe(residence.reported_in_at.as_deref()),
        maybe(contact.and_then(|c| c.person.as_deref())),
        maybe(contact.and_then(|c| c.last_contact_at.as_deref())),
    ])
}

fn activity_row(case: &CaseFile, activity: &Activity) -> Row {
    vec![
        text(&case.name),
        text(&activity.date),
        Cell::Text(value_text("kind", &activity.kind)),
        text(&activity.description),
        activity.points.map_or_else(|| text(""), Cell::Number),
        text(&activity.recorded_by),
    ]
}

/// Why a ledger could not be made.
#[derive(Debug, thiserror::Error)]
enum LedgerError {
    /// The case files could not be read.
    #[error(transparent)]
    Read(#[from] OpError),
    /// More rows than a download may have.
    #[error("the ledger has more than {MAX_ROWS} rows; choose a shorter period")]
    TooManyRows,
    /// The workbook could not be written.
    #[error("writing the workbook: {0}")]
    Workbook(#[from] XlsxError),
    /// The work stopped before it ended (a panic while making it).
    #[error("making the ledger stopped: {0}")]
    Interrupted(String),
}

/// The members of the ledgers, by home org, then name: home or residence at this office or
/// below (with a residence only, for the two-dwelling register).
fn members_here(s: &ApiState, two_dwelling_only: bool) -> Result<Vec<MemberLine>, OpError> {
    let mut lines = members::list(&s.repo, Some(s.repo.me()), two_dwelling_only)?;
    lines.sort_by(|a, b| (&a.home_org, &a.name, &a.id).cmp(&(&b.home_org, &b.name, &b.id)));
    Ok(lines)
}

/// The case files of `lines`, read one at a time; one that left this office between the
/// list and the read is skipped.
fn case_files(
    s: &ApiState,
    lines: Vec<MemberLine>,
) -> impl Iterator<Item = Result<CaseFile, OpError>> + '_ {
    lines
        .into_iter()
        .filter_map(|line| match members::get(&s.repo, &line.id) {
            Err(OpError::Write(WriteError::NotFound(_))) => None,
            read => Some(read),
        })
}

/// The rows of `ledger` for this office, values in the current language.
fn rows(s: &ApiState, ledger: Ledger, period: &DateRange) -> Result<Vec<Row>, LedgerError> {
    let lines = members_here(s, ledger == Ledger::TwoDwelling)?;
    let mut rows = Vec::new();
    for case in case_files(s, lines) {
        rows.extend(ledger.rows_of(&case?, period));
        if rows.len() > MAX_ROWS {
            return Err(LedgerError::TooManyRows);
        }
    }
    if ledger == Ledger::Activities {
        // Stable: entries of one day stay by home org, then name.
        rows.sort_by(|a, b| a[ACTIVITY_DATE].cmp(&b[ACTIVITY_DATE]));
    }
    Ok(rows)
}

// ---- the period ----------------------------------------------------------------------------

/// `?from=YYYY-MM-DD&to=YYYY-MM-DD`: the activity ledger's period as the reader asked for
/// it; a date left out (or empty) is the current half-year's first or last day.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Period {
    from: Option<String>,
    to: Option<String>,
}

/// A checked period: two dates written YYYY-MM-DD, `from` ≤ `to`, both days included.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DateRange {
    from: String,
    to: String,
}

impl Period {
    /// The period to use, with `today` (YYYY-MM-DD) choosing the default half-year; the
    /// field that is wrong and why otherwise.
    fn resolve(&self, today: &str) -> Result<DateRange, FieldError> {
        let (first, last) = half_year(today);
        let from = date_or("from", self.from.as_deref(), first)?;
        let to = date_or("to", self.to.as_deref(), last)?;
        if from > to {
            return Err(FieldError::new(
                "to",
                format!("the period ends ({to}) before it starts ({from})"),
            ));
        }
        Ok(DateRange { from, to })
    }

    /// The dates as typed, for the form to show again after a mistake (cut short).
    fn as_typed(&self) -> (String, String) {
        let typed =
            |v: &Option<String>| v.as_deref().unwrap_or_default().chars().take(20).collect();
        (typed(&self.from), typed(&self.to))
    }
}

/// `given` if it is a date, `default` if it is absent or empty.
fn date_or(field: &str, given: Option<&str>, default: String) -> Result<String, FieldError> {
    match given.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(given) => {
            let given: String = given.chars().take(20).collect();
            validate::date(field, &given)?;
            Ok(given)
        }
    }
}

/// The first and last day of the half-year `date` (YYYY-MM-DD) falls in.
fn half_year(date: &str) -> (String, String) {
    let year = date.get(..4).unwrap_or("1970");
    if date.get(5..7).is_some_and(|month| month <= "06") {
        (format!("{year}-01-01"), format!("{year}-06-30"))
    } else {
        (format!("{year}-07-01"), format!("{year}-12-31"))
    }
}

impl DateRange {
    /// The member's activity entries dated within the period.
    fn activities_of<'c>(
        &self,
        case: &'c CaseFile,
    ) -> impl Iterator<Item = &'c Activity> + use<'c, '_> {
        case.activities.iter().filter(|a| {
            self.from.as_str() <= a.date.as_str() && a.date.as_str() <= self.to.as_str()
        })
    }

    /// `?from=…&to=…` for links.
    fn query(&self) -> String {
        format!("?from={}&to={}", self.from, self.to)
    }
}

// ---- the files -----------------------------------------------------------------------------

/// A ledger ready to write: headers in the reader's language and its rows.
struct Sheet {
    /// The worksheet's name (the ledger's title).
    name: String,
    /// What a printed page says at its top: ledger, office, date or period.
    heading: String,
    columns: Vec<Column<String>>,
    rows: Vec<Row>,
}

/// The sheet as an XLSX workbook: bold header row, frozen and repeated on every printed
/// page, with a filter; every text written as a string (never as a formula). Takes the
/// sheet so that its texts move into the workbook rather than being copied.
fn xlsx(sheet: Sheet) -> Result<Vec<u8>, XlsxError> {
    let mut book = Workbook::new();
    let page = book.add_worksheet();
    // A name Excel refuses (a translation's title with `/` or `?`) keeps `Sheet1`.
    let _ = page.set_name(sheet.name.chars().take(31).collect::<String>());
    let bold = Format::new().set_bold();
    let wrap = Format::new().set_text_wrap();
    for (col, column) in (0u16..).zip(&sheet.columns) {
        page.set_column_width(col, column.width)?;
        if column.wrap {
            page.set_column_format(col, &wrap)?;
        }
        page.write_string_with_format(0, col, &column.header, &bold)?;
    }
    let last_row = u32::try_from(sheet.rows.len()).map_err(|_| XlsxError::RowColumnLimitError)?;
    for (row, cells) in (1u32..).zip(sheet.rows) {
        for (col, cell) in (0u16..).zip(cells) {
            match cell {
                Cell::Text(t) if t.is_empty() => {}
                Cell::Text(t) if t.len() > MAX_CELL_CHARS => {
                    page.write_string(
                        row,
                        col,
                        t.chars().take(MAX_CELL_CHARS).collect::<String>(),
                    )?;
                }
                Cell::Text(t) => {
                    page.write_string(row, col, t)?;
                }
                // Points are small numbers, exact in an f64.
                Cell::Number(n) => {
                    page.write_number(row, col, n as f64)?;
                }
            }
        }
    }
    let last_col = u16::try_from(sheet.columns.len().saturating_sub(1))
        .map_err(|_| XlsxError::RowColumnLimitError)?;
    page.set_freeze_panes(1, 0)?;
    page.set_repeat_rows(0, 0)?;
    page.autofilter(0, 0, last_row, last_col)?;
    page.set_landscape();
    page.set_print_fit_to_pages(1, 0);
    page.set_header(format!("&C{}", sheet.heading.replace('&', "&&")));
    book.save_to_buffer()
}

/// The byte order mark that tells Excel a CSV file is UTF-8.
const BOM: &str = "\u{feff}";

/// The sheet as CSV (RFC 4180: CRLF line ends, fields quoted where needed), UTF-8 with a BOM.
fn csv(sheet: &Sheet) -> Vec<u8> {
    let mut out = String::from(BOM);
    csv_line(&mut out, sheet.columns.iter().map(|c| csv_field(&c.header)));
    for row in &sheet.rows {
        csv_line(
            &mut out,
            row.iter().map(|cell| match cell {
                Cell::Text(t) => csv_field(t),
                Cell::Number(n) => n.to_string(),
            }),
        );
    }
    out.into_bytes()
}

fn csv_line(out: &mut String, fields: impl Iterator<Item = String>) {
    let fields: Vec<String> = fields.collect();
    out.push_str(&fields.join(","));
    out.push_str("\r\n");
}

/// One CSV field: a text a spreadsheet would take for a formula gets a leading `'`; a field
/// with a comma, quote or line break is quoted, its quotes doubled.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// A ledger file as it is sent.
struct Download {
    format: FileType,
    /// ASCII: `roster-hoboksar_bayin-2026-07-15.xlsx`.
    file_name: String,
    /// In the reader's language: `党员名册-hoboksar_bayin-2026-07-15.xlsx`.
    display_name: String,
    bytes: Vec<u8>,
}

/// Makes the ledger file, in the current language. Reads every case file of this office:
/// call it off the async threads.
fn make(
    s: &ApiState,
    ledger: Ledger,
    format: FileType,
    period: &DateRange,
) -> Result<Download, LedgerError> {
    let me = s.repo.me();
    let (when, heading_when) = match ledger {
        Ledger::Activities => (
            format!("{}_{}", period.from, period.to),
            format!("{} – {}", period.from, period.to),
        ),
        _ => (members::today(), members::today()),
    };
    let title = ledger.title().short();
    let sheet = Sheet {
        name: title.to_owned(),
        heading: format!("{title} · {me} · {heading_when}"),
        columns: ledger.headers(),
        rows: rows(s, ledger, period)?,
    };
    let office = office_in_file_name(me);
    let extension = format.extension();
    Ok(Download {
        format,
        file_name: format!("{}-{office}-{when}.{extension}", ledger.slug()),
        display_name: format!("{title}-{office}-{when}.{extension}"),
        bytes: format.write(sheet)?,
    })
}

/// The office's org path as a file name part: `hoboksar/bayin` → `hoboksar_bayin`.
fn office_in_file_name(org: &OrgPath) -> String {
    org.as_str().replace('/', "_")
}

/// `attachment` with an ASCII `filename` for old clients and the real name as RFC 5987
/// `filename*`.
fn content_disposition(file_name: &str, display_name: &str) -> String {
    let ascii: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        percent_encode(display_name)
    )
}

/// RFC 5987 `value-chars`: `attr-char`s as they are, every other byte as `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl IntoResponse for Download {
    fn into_response(self) -> Response {
        let disposition = content_disposition(&self.file_name, &self.display_name);
        let disposition = HeaderValue::try_from(disposition)
            .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(self.format.content_type()),
                ),
                (header::CONTENT_DISPOSITION, disposition),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            self.bytes,
        )
            .into_response()
    }
}

/// Runs `work` on a blocking thread once no other ledger is being made.
async fn one_at_a_time<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    let permit = MAKING
        .acquire()
        .await
        .map_err(|e| LedgerError::Interrupted(e.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(|e| LedgerError::Interrupted(e.to_string()))?
}

// ---- handlers ------------------------------------------------------------------------------

/// `GET /dashboard/ledgers/{file}`: a ledger file for a signed-in office.
pub(super) async fn download(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(file): Path<String>,
    Query(period): Query<Period>,
) -> Response {
    let Some(visit) = Visit::of(&s, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let Some((ledger, format)) = parse_file(&file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let language = visit.language;
    let period = match period.resolve(&members::today()) {
        Ok(period) => period,
        Err(e) => {
            return refusal(language, StatusCode::BAD_REQUEST, || {
                format!("{BAD_PERIOD}: {e}")
            });
        }
    };
    let made = one_at_a_time(move || in_language(language, || make(&s, ledger, format, &period)));
    match made.await {
        Ok(file) => file.into_response(),
        Err(LedgerError::TooManyRows) => refusal(language, StatusCode::BAD_REQUEST, || {
            TOO_MANY_ROWS.fill(&[("n", &MAX_ROWS.to_string())])
        }),
        Err(e) => {
            tracing::error!(ledger = ledger.slug(), "ledger: {e}");
            refusal(language, StatusCode::INTERNAL_SERVER_ERROR, || {
                INTERNAL_ERROR.to_string()
            })
        }
    }
}

/// A plain-text answer instead of a file; `message` is made in `language`.
fn refusal(language: Language, status: StatusCode, message: impl FnOnce() -> String) -> Response {
    let message = in_language(language, message);
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        message,
    )
        .into_response()
}

/// How many rows each ledger has now; the activity ledger's only for a valid period.
struct Counts {
    members: usize,
    two_dwelling: usize,
    activities: Option<usize>,
}

impl Counts {
    fn of(&self, ledger: Ledger) -> Option<usize> {
        match ledger {
            Ledger::Roster => Some(self.members),
            Ledger::TwoDwelling => Some(self.two_dwelling),
            Ledger::Activities => self.activities,
        }
    }
}

fn count(s: &ApiState, period: Option<&DateRange>) -> Result<Counts, OpError> {
    let lines = members_here(s, false)?;
    let two_dwelling = lines.iter().filter(|l| l.residence_org.is_some()).count();
    let members = lines.len();
    let activities = match period {
        None => None,
        Some(period) => {
            let mut n = 0;
            for case in case_files(s, lines) {
                n += period.activities_of(&case?).count();
            }
            Some(n)
        }
    };
    Ok(Counts {
        members,
        two_dwelling,
        activities,
    })
}

/// `GET /dashboard/ledgers`: the ledgers, their counts and download links.
pub(super) async fn page(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(period): Query<Period>,
) -> Response {
    let visit = visit_or_sign_in!(s, headers);
    let resolved = period.resolve(&members::today());
    let counted = {
        let (s, valid) = (s.clone(), resolved.clone().ok());
        one_at_a_time(move || Ok(count(&s, valid.as_ref())?)).await
    };
    visit.respond(&s, || {
        let counts = counted.map_err(|e| match e {
            LedgerError::Read(e) => e,
            other => StorageError::Backend(Box::new(other)).into(),
        })?;
        Ok((
            format!("{TITLE} · {}", s.repo.me()),
            render(&counts, &period, &resolved),
        ))
    })
}

fn render(counts: &Counts, typed: &Period, period: &Result<DateRange, FieldError>) -> String {
    let rows: String = Ledger::ALL
        .into_iter()
        .map(|ledger| {
            let query = match (ledger, period) {
                (Ledger::Activities, Ok(p)) => Some(p.query()),
                (Ledger::Activities, Err(_)) => None,
                _ => Some(String::new()),
            };
            ledger_row(ledger, counts.of(ledger), query.as_deref())
        })
        .collect();
    format!(
        r#"<main class="grid"><section id="ledgers" class="card">
<h2>{heading}</h2>
<p class="muted">{INTRO} {NO_ID_NUMBERS}</p>
<table><thead><tr><th>{LEDGER}</th><th class="num">{ROWS}</th><th>{DOWNLOAD}</th></tr></thead>
<tbody>{rows}</tbody></table>
{form}
</section></main>"#,
        heading = TITLE.heading(),
        form = period_form(typed, period),
    )
}

/// A ledger's line: title and what it holds, its row count, its two download links (none
/// while the period is wrong).
fn ledger_row(ledger: Ledger, count: Option<usize>, query: Option<&str>) -> String {
    let links = query
        .map(|query| {
            FileType::ALL
                .into_iter()
                .map(|f| {
                    format!(
                        r#"<a href="/dashboard/ledgers/{slug}.{ext}{query}" download>{ext_upper}</a>"#,
                        slug = ledger.slug(),
                        ext = f.extension(),
                        query = esc(query),
                        ext_upper = f.extension().to_uppercase(),
                    )
                })
                .collect::<Vec<_>>()
                .join(" · ")
        })
        .unwrap_or_else(|| "—".to_owned());
    format!(
        r#"<tr><td><b>{title}</b><div class="small muted">{hint}</div></td><td class="num">{count}</td><td>{links}</td></tr>"#,
        title = ledger.title().heading(),
        hint = ledger.hint(),
        count = count.map_or_else(|| "—".to_owned(), |n| n.to_string()),
    )
}

/// The activity ledger's period: two dates and a button that counts again; the mistake,
/// if the dates are wrong.
fn period_form(typed: &Period, period: &Result<DateRange, FieldError>) -> String {
    let ((from, to), error) = match period {
        Ok(p) => ((p.from.clone(), p.to.clone()), String::new()),
        Err(e) => (
            typed.as_typed(),
            format!(
                r#"<p class="error" role="alert">{BAD_PERIOD}: {}</p>"#,
                esc(&e.to_string())
            ),
        ),
    };
    format!(
        r#"<form method="get" action="/dashboard/ledgers" class="search-form">
<span>{ACTIVITY_LEDGER}</span>
<label>{PERIOD_FROM} <input type="date" name="from" value="{from}" required></label>
<label>{PERIOD_TO} <input type="date" name="to" value="{to}" required></label>
<button type="submit">{SHOW}</button></form>{error}"#,
        from = esc(&from),
        to = esc(&to),
    )
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use amphi_protocol::casefile::{Contact, Residence};

    use super::super::labels::languages;
    use super::*;

    fn english() -> Language {
        Language::from_code("en").expect("English is built in")
    }

    fn sheet(rows: Vec<Row>) -> Sheet {
        let column = |header: &str| Column {
            header: header.to_owned(),
            width: 10.0,
            wrap: false,
        };
        Sheet {
            name: "活动台账".to_owned(),
            heading: "活动台账 · hoboksar/bayin · 2026-07-01_2026-12-31".to_owned(),
            columns: vec![column("姓名"), column("内容"), column("积分")],
            rows,
        }
    }

    fn csv_text(sheet: &Sheet) -> String {
        String::from_utf8(csv(sheet)).expect("CSV is UTF-8")
    }

    /// A two-dwelling member with two activities, an ID number and every optional field.
    fn ayinur() -> CaseFile {
        let activity = |id: &str, date: &str, kind: &str, points| Activity {
            id: id.to_owned(),
            date: date.to_owned(),
            kind: kind.to_owned(),
            description: format!("{kind} on {date}"),
            points,
            recorded_by: "hoboksar/town/community-1".to_owned(),
            comments: Vec::new(),
        };
        CaseFile {
            id: "m-0123456789abcdef".to_owned(),
            name: "阿依努尔".to_owned(),
            gender: "female".to_owned(),
            ethnicity: "哈萨克族".to_owned(),
            birth_date: "1971-03-02".to_owned(),
            joined_at: "1998-07-01".to_owned(),
            id_number: Some("654226197103020021".to_owned()),
            phone: Some("13800000000".to_owned()),
            education: Some("高中".to_owned()),
            categories: vec!["two-dwelling".to_owned(), "farmer-herder".to_owned()],
            home_org: "hoboksar/bayin/village-3".to_owned(),
            residence: Some(Residence {
                org: "hoboksar/town/community-1".to_owned(),
                since: Some("2026-11-01".to_owned()),
                until: Some("2027-03-31".to_owned()),
                reported_in_at: Some("2026-11-03".to_owned()),
            }),
            activities: vec![
                activity("a-1", "2026-06-30", "study", Some(2)),
                activity("a-2", "2026-07-01", "party-day", None),
                activity("a-3", "2026-12-31", "volunteer-service", Some(-1)),
                activity("a-4", "2027-01-01", "dues", Some(1)),
            ],
            reviews: Vec::new(),
            transfers: Vec::new(),
            contact: Some(Contact {
                person: Some("王书记".to_owned()),
                last_contact_at: Some("2026-12-01".to_owned()),
            }),
        }
    }

    #[test]
    fn csv_fields_are_quoted_as_rfc_4180_says() {
        assert_eq!(csv_field("阿依努尔"), "阿依努尔");
        assert_eq!(csv_field("学习, 讨论"), "\"学习, 讨论\"");
        assert_eq!(csv_field("他说\"好\""), "\"他说\"\"好\"\"\"");
        assert_eq!(csv_field("第一行\n第二行"), "\"第一行\n第二行\"");
        assert_eq!(csv_field("a\r\nb"), "\"a\r\nb\"");
        assert_eq!(csv_field(""), "");
    }

    #[test]
    fn csv_cells_that_look_like_formulas_are_disarmed() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(csv_field("+86 138"), "'+86 138");
        assert_eq!(csv_field("-1+2"), "'-1+2");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tcmd"), "'\tcmd");
        assert_eq!(csv_field("a=b"), "a=b", "only a leading sign is a formula");
        // A number of points is a number, not text a reader typed.
        let text = csv_text(&sheet(vec![vec![
            text("张三"),
            text("=1+1"),
            Cell::Number(-3),
        ]]));
        assert!(text.ends_with("张三,'=1+1,-3\r\n"), "{text:?}");
    }

    #[test]
    fn csv_starts_with_a_bom_then_the_header_and_ends_lines_with_crlf() {
        let bytes = csv(&sheet(vec![
            vec![text("张三"), text("学习"), Cell::Number(2)],
            vec![text("李四"), text(""), text("")],
        ]));
        assert_eq!(&bytes[..3], b"\xEF\xBB\xBF");
        let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
        assert_eq!(text, "姓名,内容,积分\r\n张三,学习,2\r\n李四,,\r\n");
    }

    /// The named part of an XLSX file (a zip), as text.
    fn part(xlsx: &[u8], name: &str) -> String {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(xlsx)).expect("an XLSX is a zip");
        let mut text = String::new();
        zip.by_name(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    #[test]
    fn xlsx_has_the_chinese_header_bold_and_frozen_and_writes_formulas_as_text() {
        let rows = vec![
            vec![text("张三"), text("=1+1"), Cell::Number(2)],
            vec![text("李四"), text("组织生活 & 学习"), text("")],
        ];
        let bytes = xlsx(sheet(rows)).expect("the workbook is written");
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        let strings = part(&bytes, "xl/sharedStrings.xml");
        for expected in [
            "姓名",
            "内容",
            "积分",
            "张三",
            "=1+1",
            "组织生活 &amp; 学习",
        ] {
            assert!(strings.contains(expected), "{expected} missing: {strings}");
        }
        let worksheet = part(&bytes, "xl/worksheets/sheet1.xml");
        assert!(worksheet.contains(r#"ySplit="1""#) && worksheet.contains(r#"state="frozen""#));
        assert!(worksheet.contains("<autoFilter"), "{worksheet}");
        assert!(
            !worksheet.contains("<f>"),
            "a text is never a formula: {worksheet}"
        );
        assert!(
            worksheet.contains("<v>2</v>"),
            "points are numbers: {worksheet}"
        );
        let styles = part(&bytes, "xl/styles.xml");
        assert!(styles.contains("<b/>"), "the header is bold: {styles}");
        assert!(part(&bytes, "xl/workbook.xml").contains(r#"name="活动台账""#));
    }

    #[test]
    fn a_sheet_name_excel_refuses_keeps_the_default() {
        let mut refused = sheet(Vec::new());
        refused.name = "a/b?".to_owned();
        let bytes = xlsx(refused).expect("written all the same");
        assert!(part(&bytes, "xl/workbook.xml").contains(r#"name="Sheet1""#));
    }

    #[test]
    fn only_the_six_downloads_are_files() {
        assert_eq!(
            parse_file("roster.xlsx"),
            Some((Ledger::Roster, FileType::Xlsx))
        );
        assert_eq!(
            parse_file("roster.csv"),
            Some((Ledger::Roster, FileType::Csv))
        );
        assert_eq!(
            parse_file("two-dwelling.xlsx"),
            Some((Ledger::TwoDwelling, FileType::Xlsx))
        );
        assert_eq!(
            parse_file("two-dwelling.csv"),
            Some((Ledger::TwoDwelling, FileType::Csv))
        );
        assert_eq!(
            parse_file("activities.xlsx"),
            Some((Ledger::Activities, FileType::Xlsx))
        );
        assert_eq!(
            parse_file("activities.csv"),
            Some((Ledger::Activities, FileType::Csv))
        );
        for other in [
            "roster",
            "roster.pdf",
            "Roster.csv",
            "roster.csv.exe",
            "../roster.csv",
            "",
            ".",
        ] {
            assert_eq!(parse_file(other), None, "{other}");
        }
    }

    fn period(from: Option<&str>, to: Option<&str>) -> Period {
        Period {
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        }
    }

    fn range(from: &str, to: &str) -> DateRange {
        DateRange {
            from: from.to_owned(),
            to: to.to_owned(),
        }
    }

    #[test]
    fn the_period_is_the_current_half_year_unless_chosen() {
        let none = Period::default();
        assert_eq!(
            none.resolve("2026-07-15"),
            Ok(range("2026-07-01", "2026-12-31"))
        );
        assert_eq!(
            none.resolve("2026-06-30"),
            Ok(range("2026-01-01", "2026-06-30"))
        );
        assert_eq!(
            none.resolve("2027-01-01"),
            Ok(range("2027-01-01", "2027-06-30"))
        );
        let empty = period(Some(""), Some(" "));
        assert_eq!(
            empty.resolve("2026-12-31"),
            Ok(range("2026-07-01", "2026-12-31"))
        );
        let chosen = period(Some("2026-03-01"), Some("2026-09-30"));
        assert_eq!(
            chosen.resolve("2026-07-15"),
            Ok(range("2026-03-01", "2026-09-30"))
        );
        let from_only = period(Some("2026-08-01"), None);
        assert_eq!(
            from_only.resolve("2026-07-15"),
            Ok(range("2026-08-01", "2026-12-31"))
        );
        let one_day = period(Some("2026-08-01"), Some("2026-08-01"));
        assert_eq!(
            one_day.resolve("2026-07-15"),
            Ok(range("2026-08-01", "2026-08-01"))
        );
    }

    #[test]
    fn a_period_needs_real_dates_in_order() {
        let wrong = |from: &str, to: &str| period(Some(from), Some(to)).resolve("2026-07-15");
        for (from, to, field) in [
            ("2026-13-01", "2026-12-31", "from"),
            ("2026-02-30", "2026-12-31", "from"),
            ("26-07-01", "2026-12-31", "from"),
            ("2026/07/01", "2026-12-31", "from"),
            ("2026-07-01", "2026-12-31'><script>", "to"),
            ("2026-07-01", &"9".repeat(10_000), "to"),
            ("2026-12-31", "2026-07-01", "to"),
        ] {
            let e = wrong(from, to).expect_err(to);
            assert_eq!(e.field, field, "{from}..{to}: {e}");
            assert!(e.to_string().len() < 120, "the message stays short: {e}");
        }
        let reversed = wrong("2026-12-31", "2026-07-01").unwrap_err();
        assert!(
            reversed.to_string().contains("before it starts"),
            "{reversed}"
        );
    }

    #[test]
    fn activities_on_the_first_and_last_day_are_in_the_period() {
        let case = ayinur();
        let ids: Vec<&str> = range("2026-07-01", "2026-12-31")
            .activities_of(&case)
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(ids, ["a-2", "a-3"]);
    }

    #[test]
    fn rows_fit_their_columns_in_chinese_and_leave_out_the_id_number() {
        let case = ayinur();
        let period = range("2026-07-01", "2026-12-31");
        in_language(Language::DEFAULT, || {
            for ledger in Ledger::ALL {
                let rows = ledger.rows_of(&case, &period);
                assert!(!rows.is_empty(), "{ledger:?}");
                for row in &rows {
                    assert_eq!(row.len(), ledger.columns().len(), "{ledger:?}");
                    assert!(!row.contains(&text("654226197103020021")), "{ledger:?}");
                }
            }
            let roster = &Ledger::Roster.rows_of(&case, &period)[0];
            assert_eq!(roster[1], text("女"));
            assert_eq!(roster[7], text("两栖 / 农牧民党员"));
            assert_eq!(roster[9], text("hoboksar/town/community-1"));
            let register = &Ledger::TwoDwelling.rows_of(&case, &period)[0];
            assert_eq!(register[5], text("2026-11-03"));
            assert_eq!(register[6], text("王书记"));
            let activities = Ledger::Activities.rows_of(&case, &period);
            assert_eq!(activities[0][2], text("主题党日"));
            assert_eq!(activities[0][4], text(""));
            assert_eq!(activities[1][4], Cell::Number(-1));
            assert_eq!(activities[1][ACTIVITY_DATE], text("2026-12-31"));
        });
        let mut settled = case;
        settled.residence = None;
        assert!(Ledger::TwoDwelling.rows_of(&settled, &period).is_empty());
    }

    #[test]
    fn headers_are_in_the_readers_language() {
        let names = |language| {
            in_language(language, || {
                Ledger::TwoDwelling
                    .headers()
                    .into_iter()
                    .map(|c| c.header)
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            names(Language::DEFAULT)[..3],
            ["姓名", "组织关系所在党组织", "居住地党组织"]
        );
        assert_eq!(names(english())[..3], ["Name", "Home org", "Residence org"]);
    }

    #[test]
    fn every_ledger_label_is_in_both_built_in_languages() {
        let labels = [
            TITLE,
            INTRO,
            NO_ID_NUMBERS,
            LEDGER,
            ROWS,
            DOWNLOAD,
            ROSTER,
            ROSTER_HINT,
            TWO_DWELLING_REGISTER,
            TWO_DWELLING_HINT,
            ACTIVITY_LEDGER,
            ACTIVITY_HINT,
            PERIOD_FROM,
            PERIOD_TO,
            SHOW,
            RESIDENCE_ORG,
            RESIDING_SINCE,
            RESIDING_UNTIL,
            REPORTED_IN_ON,
            BAD_PERIOD,
            TOO_MANY_ROWS,
        ];
        let columns = Ledger::ALL
            .into_iter()
            .flat_map(|l| l.columns().iter().map(|c| c.header));
        for label in labels.into_iter().chain(columns) {
            for table in &languages()[..2] {
                assert!(
                    table.keys().any(|k| k == label.0),
                    "{} lacks {}",
                    table.code,
                    label.0
                );
            }
        }
    }

    #[test]
    fn the_download_is_named_in_ascii_and_in_the_readers_language() {
        let office = OrgPath::parse("hoboksar/bayin").unwrap();
        assert_eq!(office_in_file_name(&office), "hoboksar_bayin");
        let header = content_disposition(
            "roster-hoboksar_bayin-2026-07-15.xlsx",
            "党员名册-hoboksar_bayin-2026-07-15.xlsx",
        );
        assert_eq!(
            header,
            "attachment; filename=\"roster-hoboksar_bayin-2026-07-15.xlsx\"; \
             filename*=UTF-8''%E5%85%9A%E5%91%98%E5%90%8D%E5%86%8C-hoboksar_bayin-2026-07-15.xlsx"
        );
        let odd = content_disposition("a\"b; c.csv", "a b;\"c'.csv");
        assert_eq!(
            odd,
            "attachment; filename=\"a_b__c.csv\"; filename*=UTF-8''a%20b%3B%22c%27.csv"
        );
    }
}
