//! Every text the dashboard shows, in one place: the language files under `lang/` —
//! `zh-Hans.txt` (Simplified Chinese, what the offices read) and `en.txt` — one
//! `key = text` line per label. The code names a label by its key ([`Label`]); which
//! language it comes out in is the reader's choice for the request being rendered
//! ([`in_language`]): Chinese with the English beside it (the default, so office staff read
//! the one and the logs' vocabulary matches the other), or English alone.
//!
//! A translation (Uyghur, Mongolian, …) is a file, not a code change: a copy of
//! `zh-Hans.txt` with its texts changed, saved as `DATA_DIR/lang/<code>.txt`, is offered
//! in the page's language switch after a restart (shown with the English beside it; a key
//! the file lacks shows in English). Translations are the office's own files: their texts
//! go into the page as written.
use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use crate::status::{Direction, PeerState};

use super::pages::esc;

const ZH_HANS: &str = include_str!("lang/zh-Hans.txt");
const EN: &str = include_str!("lang/en.txt");

/// One language's texts, by key.
pub(super) struct Table {
    /// Its code: `zh-Hans`, `en`, or a translation file's name.
    pub(super) code: String,
    /// Its own name for itself (`@name = …`).
    pub(super) name: String,
    texts: HashMap<String, String>,
}

impl Table {
    /// Parses a language file: `key = text` lines, `#` comments and blank lines skipped.
    pub(super) fn parse(code: &str, file: &str) -> Result<Table, String> {
        let mut texts = HashMap::new();
        for (n, line) in file.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, text)) = line.split_once(" = ") else {
                return Err(format!("{code}: line {}: not `key = text`", n + 1));
            };
            if texts
                .insert(key.trim().to_owned(), text.trim().to_owned())
                .is_some()
            {
                return Err(format!("{code}: line {}: {key} twice", n + 1));
            }
        }
        let name = texts.remove("@name").unwrap_or_else(|| code.to_owned());
        Ok(Table {
            code: code.to_owned(),
            name,
            texts,
        })
    }

    /// How many texts it names.
    pub(super) fn len(&self) -> usize {
        self.texts.len()
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.texts.get(key).map(String::as_str)
    }

    /// Every key the file defines.
    #[cfg(test)]
    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        self.texts.keys().map(String::as_str)
    }
}

/// The languages this node offers: Simplified Chinese, English, then the translations.
static LANGUAGES: OnceLock<Vec<Table>> = OnceLock::new();

/// Loads the translation files `*.txt` in `folder` (if it exists) beside the built-in
/// languages. Called once at start; a file that does not parse is skipped with a warning.
pub fn load_translations(folder: &Path) {
    let mut tables = built_in();
    let mut files: Vec<_> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    for path in files {
        let Some(code) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let valid_code = !code.is_empty()
            && code.len() <= 16
            && code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !tables.iter().any(|t| t.code == code);
        let table = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| Table::parse(code, &text));
        match table {
            Ok(table) if valid_code => tables.push(table),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "translation skipped: its name must be a new language code")
            }
            Err(e) => tracing::warn!(path = %path.display(), "translation skipped: {e}"),
        }
    }
    let _ = LANGUAGES.set(tables);
}

fn built_in() -> Vec<Table> {
    vec![
        Table::parse("zh-Hans", ZH_HANS).expect("the built-in Chinese file parses"),
        Table::parse("en", EN).expect("the built-in English file parses"),
    ]
}

pub(super) fn languages() -> &'static [Table] {
    LANGUAGES.get_or_init(built_in)
}

/// How a page speaks: one language, and whether English goes beside it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Language {
    /// Index into [`languages`].
    primary: usize,
}

impl Language {
    /// Simplified Chinese with English beside it.
    pub(super) const DEFAULT: Language = Language { primary: 0 };

    /// The language with `code`, if this node offers it.
    pub(super) fn from_code(code: &str) -> Option<Language> {
        languages()
            .iter()
            .position(|t| t.code == code)
            .map(|primary| Language { primary })
    }

    pub(super) fn code(self) -> &'static str {
        &languages()[self.primary].code
    }

    fn english_only(self) -> bool {
        self.code() == "en"
    }

    /// The page's `lang` attribute.
    pub(super) fn html_lang(self) -> &'static str {
        self.code()
    }
}

thread_local! {
    static CURRENT: Cell<Language> = const { Cell::new(Language::DEFAULT) };
}

/// Runs `render` with every label in `language`, then restores the previous one. Rendering
/// is synchronous, so the choice cannot leak into another request on this thread.
pub(super) fn in_language<R>(language: Language, render: impl FnOnce() -> R) -> R {
    let before = CURRENT.with(|c| c.replace(language));
    let out = render();
    CURRENT.with(|c| c.set(before));
    out
}

pub(super) fn current() -> Language {
    CURRENT.with(Cell::get)
}

/// The text of `key` in the current language and in English (`None` when English is the
/// language): a key a translation lacks falls back to English.
fn texts(key: &'static str) -> (&'static str, Option<&'static str>) {
    let all = languages();
    let language = current();
    let english = all[1].get(key).unwrap_or(key);
    if language.english_only() {
        return (english, None);
    }
    match all[language.primary].get(key) {
        Some(text) => (text, Some(english)),
        None => (english, None),
    }
}

/// A piece of dashboard text, named by its key in the language files. Shown as
/// `中文 English` (`Display`), or with the English in a muted span ([`Label::heading`]).
#[derive(Clone, Copy)]
pub(super) struct Label(pub(super) &'static str);

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match texts(self.0) {
            (text, Some(en)) => write!(f, "{text} {en}"),
            (text, None) => f.write_str(text),
        }
    }
}

impl Label {
    /// `中文 <span class="en">English</span>`, for headings and buttons.
    pub(super) fn heading(self) -> String {
        match texts(self.0) {
            (text, Some(en)) => format!(r#"{text} <span class="en">{en}</span>"#),
            (text, None) => text.to_owned(),
        }
    }

    /// The text in the page's language only, for attributes such as `placeholder`.
    pub(super) fn short(self) -> &'static str {
        texts(self.0).0
    }

    /// The label with `{name}` placeholders filled by `values` (already escaped).
    pub(super) fn fill(self, values: &[(&str, &str)]) -> String {
        let fill = |text: &str| {
            values.iter().fold(text.to_owned(), |t, (name, value)| {
                t.replace(&format!("{{{name}}}"), value)
            })
        };
        match texts(self.0) {
            (text, Some(en)) => format!("{} {}", fill(text), fill(en)),
            (text, None) => fill(text),
        }
    }
}

/// A value from a case file with its label in front: `学习教育 <span class="en">study</span>`;
/// a value the files do not name is shown as it is, escaped.
fn labelled(group: &str, value: &str) -> String {
    let key = format!("{group}.{value}");
    let all = languages();
    let language = current();
    let known = all[1].get(&key).is_some();
    if !known || language.english_only() {
        return esc(value);
    }
    match all[language.primary].get(&key) {
        Some(text) => format!(r#"{text} <span class="en">{}</span>"#, esc(value)),
        None => esc(value),
    }
}

/// A case-file value's name as plain text in the current language only (for files):
/// `学习教育` for `("kind", "study")`; the value itself when the files do not name it.
pub(super) fn value_text(group: &str, value: &str) -> String {
    let key = format!("{group}.{value}");
    let all = languages();
    let Some(english) = all[1].get(&key) else {
        return value.to_owned();
    };
    all[current().primary]
        .get(&key)
        .unwrap_or(english)
        .to_owned()
}

pub(super) fn kind_label(kind: &str) -> String {
    labelled("kind", kind)
}

pub(super) fn category_label(category: &str) -> String {
    labelled("category", category)
}

pub(super) fn rating_label(rating: &str) -> String {
    labelled("rating", rating)
}

pub(super) fn gender_label(gender: &str) -> String {
    labelled("gender", gender)
}

pub(super) fn transfer_state_label(state: &str) -> String {
    format!(
        r#"<span class="tstate {}">{}</span>"#,
        esc(state),
        labelled("transfer", state)
    )
}

pub(super) fn peer_state(state: PeerState) -> String {
    let (class, value) = match state {
        PeerState::Connected => ("connected", "connected"),
        PeerState::Connecting => ("connecting", "connecting"),
        PeerState::Disconnected => ("disconnected", "disconnected"),
    };
    format!(
        r#"<span class="state {class}">{}</span>"#,
        labelled("peer", value)
    )
}

/// Which end of a peer connection dialed, for the peers table.
pub(super) fn direction_label(direction: Direction) -> String {
    match direction {
        Direction::Dialed => labelled("direction", "dialed"),
        Direction::Accepted => labelled("direction", "accepted"),
    }
}

/// The search heading before a search: how many members the office sees.
pub(super) fn members_here(n: usize) -> String {
    MEMBERS_HERE.fill(&[("n", &n.to_string())])
}

/// The search heading after a search for `query` (already escaped).
pub(super) fn members_found(query: &str, n: usize) -> String {
    MEMBERS_FOUND.fill(&[("query", query), ("n", &n.to_string())])
}

/// Under a search answer cut at its limit: how many more there are.
pub(super) fn more_found(n: usize) -> String {
    MORE_FOUND.fill(&[("n", &n.to_string())])
}

const MEMBERS_HERE: Label = Label("members_here");
const MEMBERS_FOUND: Label = Label("members_found");
const MORE_FOUND: Label = Label("more_found");

// The page frame and signing in.
pub(super) const RECORD_SYNC: Label = Label("record_sync");
pub(super) const OFFICE: Label = Label("office");
pub(super) const NODE: Label = Label("node");
pub(super) const SIGN_OUT: Label = Label("sign_out");
pub(super) const SIGN_IN: Label = Label("sign_in");
pub(super) const ADMIN_SIGN_IN: Label = Label("admin_sign_in");
pub(super) const ADMIN_TOKEN: Label = Label("admin_token");
pub(super) const TOKEN_HINT: Label = Label("token_hint");
pub(super) const WRONG_TOKEN: Label = Label("wrong_token");
pub(super) const NO_SUCH_CASE_FILE: Label = Label("no_such_case_file");
pub(super) const INTERNAL_ERROR: Label = Label("internal_error");
pub(super) const BACK_TO_OVERVIEW: Label = Label("back_to_overview");
pub(super) const OVERVIEW: Label = Label("overview");
pub(super) const THIS_OFFICE: Label = Label("this_office");

// Sync status.
pub(super) const SYNC_STATUS: Label = Label("sync_status");
pub(super) const UPDATED: Label = Label("updated");
pub(super) const CASE_FILES: Label = Label("case_files");
pub(super) const ROSTERS: Label = Label("rosters");
pub(super) const CONFLICTS: Label = Label("conflicts");
pub(super) const QUARANTINE: Label = Label("quarantine");
pub(super) const REFUSED: Label = Label("refused");
pub(super) const CERT_EXPIRES: Label = Label("cert_expires");
pub(super) const PEER: Label = Label("peer");
pub(super) const STATE: Label = Label("state");
pub(super) const DIRECTION: Label = Label("direction");
pub(super) const LAST_SYNC: Label = Label("last_sync");
pub(super) const PENDING: Label = Label("pending");
pub(super) const LAST_ERROR: Label = Label("last_error");
pub(super) const NO_PEERS: Label = Label("no_peers");

// Member search.
pub(super) const MEMBER_SEARCH: Label = Label("member_search");
pub(super) const NAME: Label = Label("name");
pub(super) const SEARCH: Label = Label("search");
pub(super) const TWO_DWELLING: Label = Label("two_dwelling");

// Conflicts, quarantine and transfers.
pub(super) const NO_CONFLICTS: Label = Label("no_conflicts");
pub(super) const MEMBER: Label = Label("member");
pub(super) const KIND: Label = Label("kind");
pub(super) const RULE: Label = Label("rule");
pub(super) const WINNER: Label = Label("winner");
pub(super) const NO_REFUSED_CHANGES: Label = Label("no_refused_changes");
pub(super) const AT: Label = Label("at");
pub(super) const SOURCE_PEER: Label = Label("source_peer");
pub(super) const DOC: Label = Label("doc");
pub(super) const CLAIMED_AUTHOR: Label = Label("claimed_author");
pub(super) const REASON: Label = Label("reason");
pub(super) const TRANSFERS: Label = Label("transfers");
pub(super) const NO_OPEN_TRANSFERS: Label = Label("no_open_transfers");
pub(super) const FROM: Label = Label("from");
pub(super) const TO: Label = Label("to");

// Bundles: carrying changes on a USB stick while a link is down.
pub(super) const BUNDLES: Label = Label("bundles");
pub(super) const BUNDLE_FOR: Label = Label("bundle_for");
pub(super) const BUNDLE_ALL: Label = Label("bundle_all");
pub(super) const BUNDLE_DOWNLOAD: Label = Label("bundle_download");
pub(super) const BUNDLE_IMPORT: Label = Label("bundle_import");
pub(super) const BUNDLE_HINT: Label = Label("bundle_hint");

// A member's case file.
pub(super) const CASE_FILE: Label = Label("case_file");
pub(super) const GENDER: Label = Label("gender");
pub(super) const ETHNICITY: Label = Label("ethnicity");
pub(super) const BORN: Label = Label("born");
pub(super) const JOINED: Label = Label("joined");
pub(super) const ID_NUMBER: Label = Label("id_number");
pub(super) const PHONE: Label = Label("phone");
pub(super) const EDUCATION: Label = Label("education");
pub(super) const CATEGORIES: Label = Label("categories");
pub(super) const FILE_ID: Label = Label("file_id");
pub(super) const RESIDENCE: Label = Label("residence");
pub(super) const SINCE: Label = Label("since");
pub(super) const UNTIL: Label = Label("until");
pub(super) const REPORTED_IN: Label = Label("reported_in");
pub(super) const NOT_TWO_DWELLING: Label = Label("not_two_dwelling");
pub(super) const AFFILIATION: Label = Label("affiliation");
pub(super) const HOME_ORG: Label = Label("home_org");
pub(super) const CONTACT_PERSON: Label = Label("contact_person");
pub(super) const LAST_CONTACT: Label = Label("last_contact");
pub(super) const ACTIVITIES: Label = Label("activities");
pub(super) const POINTS_TOTAL: Label = Label("points_total");
pub(super) const DATE: Label = Label("date");
pub(super) const DESCRIPTION: Label = Label("description");
pub(super) const POINTS: Label = Label("points");
pub(super) const RECORDED_BY: Label = Label("recorded_by");
pub(super) const NO_ACTIVITIES: Label = Label("no_activities");
pub(super) const COMMENT: Label = Label("comment");
pub(super) const REVIEWS: Label = Label("reviews");
pub(super) const NO_REVIEWS: Label = Label("no_reviews");
pub(super) const PERIOD: Label = Label("period");
pub(super) const RATING: Label = Label("rating");
pub(super) const REVIEW_COMMENT: Label = Label("review_comment");
pub(super) const REVIEWED_BY: Label = Label("reviewed_by");
pub(super) const NO_TRANSFERS: Label = Label("no_transfers");
pub(super) const OPENED_BY: Label = Label("opened_by");

// The bar and what forms answer.
pub(super) const NEW_MEMBER: Label = Label("new_member");
pub(super) const TRANSFER_INBOX: Label = Label("transfer_inbox");
pub(super) const CONTACTS: Label = Label("contacts");
pub(super) const ORG_PROFILE: Label = Label("org_profile");
pub(super) const SUBTREE: Label = Label("subtree");
pub(super) const LEDGERS: Label = Label("ledgers");
pub(super) const NOT_VALID: Label = Label("not_valid");
pub(super) const NOT_ALLOWED: Label = Label("not_allowed");
pub(super) const NOT_NOW: Label = Label("not_now");
pub(super) const STALE_FORM: Label = Label("stale_form");
pub(super) const ACKNOWLEDGE: Label = Label("acknowledge");
/// What a form did, by the `done` key its redirect carries.
pub(super) const DONE: [(&str, Label); 15] = [
    ("identity", Label("done.identity")),
    ("acknowledged", Label("done.acknowledged")),
    ("created", Label("done.created")),
    ("residence", Label("done.residence")),
    ("residence_ended", Label("done.residence_ended")),
    ("report_in", Label("done.report_in")),
    ("comment", Label("done.comment")),
    ("activity", Label("done.activity")),
    ("review", Label("done.review")),
    ("contact", Label("done.contact")),
    ("transfer", Label("done.transfer")),
    ("accept", Label("done.accept")),
    ("reject", Label("done.reject")),
    ("cancel", Label("done.cancel")),
    ("profile", Label("done.profile")),
];

// Casework on a case file.
pub(super) const CASEWORK: Label = Label("casework");
pub(super) const EDIT_IDENTITY: Label = Label("edit_identity");
pub(super) const CERTIFICATE: Label = Label("certificate");
pub(super) const ISSUE_CERTIFICATE: Label = Label("issue_certificate");
pub(super) const END_RESIDENCE: Label = Label("end_residence");
pub(super) const RESIDENCE_ORG: Label = Label("residence_org");
pub(super) const REPORT_IN: Label = Label("report_in");
pub(super) const REPORT_IN_HINT: Label = Label("report_in_hint");
pub(super) const RECORD_REPORT_IN: Label = Label("record_report_in");
pub(super) const ADD_COMMENT: Label = Label("add_comment");
pub(super) const ON_ACTIVITY: Label = Label("on_activity");
pub(super) const RECORD_ACTIVITY: Label = Label("record_activity");
pub(super) const HALF_YEAR_REVIEW: Label = Label("half_year_review");
pub(super) const SAVE_REVIEW: Label = Label("save_review");
pub(super) const CONTACT: Label = Label("contact");
pub(super) const SAVE_CONTACT: Label = Label("save_contact");
pub(super) const OPEN_TRANSFER: Label = Label("open_transfer");
pub(super) const TARGET_ORG: Label = Label("target_org");
pub(super) const SAVE: Label = Label("save");
pub(super) const CATEGORIES_HINT: Label = Label("categories_hint");
pub(super) const CREATE_MEMBER: Label = Label("create_member");
pub(super) const FIX_FIELDS: Label = Label("fix_fields");
pub(super) const SHORT_CODE_HINT: Label = Label("short_code_hint");
pub(super) const PRINT: Label = Label("print");
pub(super) const ISSUED_BY: Label = Label("issued_by");
pub(super) const CHOOSE_BUNDLE: Label = Label("choose_bundle");

// The transfer inbox.
pub(super) const WAITING_FOR_ME: Label = Label("waiting_for_me");
pub(super) const SENT_BY_ME: Label = Label("sent_by_me");
pub(super) const NOTHING_WAITING: Label = Label("nothing_waiting");
pub(super) const ACCEPT: Label = Label("accept");
pub(super) const REJECT: Label = Label("reject");
pub(super) const CANCEL: Label = Label("cancel");

// The office's roster and contacts.
pub(super) const ORG_NAME: Label = Label("org_name");
pub(super) const ORG_KIND: Label = Label("org_kind");
pub(super) const SECRETARY: Label = Label("secretary");
pub(super) const LIAISON: Label = Label("liaison");
pub(super) const GRIDS: Label = Label("grids");
pub(super) const GRIDS_HINT: Label = Label("grids_hint");
pub(super) const ROSTER_MEMBERS: Label = Label("roster_members");
pub(super) const HOME_HERE: Label = Label("home_here");
pub(super) const RESIDENT_HERE: Label = Label("resident_here");
pub(super) const HISTORY: Label = Label("history");
pub(super) const NOT_CONTACTED: Label = Label("not_contacted");
pub(super) const DAYS_WITHOUT_CONTACT: Label = Label("days_without_contact");
pub(super) const NOT_CONTACTED_COUNT: Label = Label("not_contacted_count");

#[cfg(test)]
mod tests {
    use super::*;

    /// Every dashboard source that names labels, to check each key is in the files.
    const SOURCE_NAMES: [&str; 8] = [
        "labels.rs",
        "pages.rs",
        "casework.rs",
        "inbox.rs",
        "org.rs",
        "mod.rs",
        "ledgers.rs",
        "subtree.rs",
    ];
    const SOURCES: [&str; 8] = [
        include_str!("labels.rs"),
        include_str!("pages.rs"),
        include_str!("casework.rs"),
        include_str!("inbox.rs"),
        include_str!("org.rs"),
        include_str!("mod.rs"),
        include_str!("ledgers.rs"),
        include_str!("subtree.rs"),
    ];

    #[test]
    fn no_text_of_the_page_is_in_traditional_script() {
        let traditional: std::collections::HashSet<char> =
            include_str!("lang/traditional-only.txt")
                .lines()
                .filter(|l| !l.starts_with('#'))
                .flat_map(str::chars)
                .collect();
        // The Traditional forms of "party" and "two" (escapes: this file holds no Traditional text).
        assert!(
            traditional.contains(&'\u{9ee8}') && traditional.contains(&'\u{5169}'),
            "the list is whole"
        );
        // The label files, and every source that renders the page (a text could slip in
        // there instead of into the files).
        let files = [("zh-Hans.txt", ZH_HANS), ("en.txt", EN)]
            .into_iter()
            .chain(
                SOURCES
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (SOURCE_NAMES[i], *s)),
            );
        for (name, text) in files {
            for (n, line) in text.lines().enumerate() {
                let found: String = line.chars().filter(|c| traditional.contains(c)).collect();
                assert!(
                    found.is_empty(),
                    "{name} line {}: Traditional {found:?} in {line:?}",
                    n + 1
                );
            }
        }
        // The check itself catches the script the page once had ("party member file").
        assert!(
            "\u{9ee8}\u{54e1}\u{6a94}\u{6848}"
                .chars()
                .any(|c| traditional.contains(&c))
        );
    }

    #[test]
    fn chinese_and_english_name_the_same_keys_and_every_label_in_the_code_exists() {
        let (zh, en) = (&languages()[0], &languages()[1]);
        let mut zh_keys: Vec<_> = zh.keys().collect();
        let mut en_keys: Vec<_> = en.keys().collect();
        zh_keys.sort_unstable();
        en_keys.sort_unstable();
        assert_eq!(zh_keys, en_keys);
        let mut named = 0;
        for source in SOURCES {
            for part in source.split("Label(\"").skip(1) {
                let key = part.split('"').next().unwrap();
                if key == "key" {
                    continue; // this test's own text
                }
                assert!(zh.get(key).is_some(), "label {key:?} is not in zh-Hans.txt");
                named += 1;
            }
        }
        assert!(named > 100, "found only {named} labels in the code");
    }

    #[test]
    fn english_only_shows_no_chinese_and_the_choice_does_not_outlive_the_render() {
        let en = Language::from_code("en").unwrap();
        let both = in_language(Language::DEFAULT, || {
            format!("{NAME} {}", kind_label("study"))
        });
        assert_eq!(both, r#"姓名 Name 学习教育 <span class="en">study</span>"#);
        let english = in_language(en, || {
            format!("{NAME} {} {}", kind_label("study"), members_here(3))
        });
        assert_eq!(
            english,
            "Name study 3 members with home or residence here or below"
        );
        assert_eq!(current(), Language::DEFAULT);
        assert_eq!(Language::from_code("xx"), None);
    }

    #[test]
    fn a_translation_is_a_file_and_a_missing_key_falls_back_to_english() {
        let t = Table::parse("ug", "@name = ئۇيغۇرچە\nname = ئىسىم\n").unwrap();
        assert_eq!(t.name, "ئۇيغۇرچە");
        assert_eq!(t.get("name"), Some("ئىسىم"));
        assert!(Table::parse("ug", "name ئىسىم").is_err(), "not key = text");
        assert!(Table::parse("ug", "a = 1\na = 2").is_err(), "a key twice");
    }
}
