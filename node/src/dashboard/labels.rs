//! Every text the dashboard shows, in one place: Simplified Chinese first, then English, so
//! office staff read the one and the logs' vocabulary matches the other. The names of the
//! values a member's file holds (activity kinds, categories, ratings, transfer and peer
//! states) come first, then the page texts ([`Label`]) grouped by the section showing them.
use crate::status::{Direction, PeerState};

use super::pages::esc;

/// A value with its Chinese label in front, escaped: `学习教育 study`.
pub(super) fn labelled(value: &str, label: Option<&str>) -> String {
    match label {
        Some(zh) => format!("{zh} <span class=\"en\">{}</span>", esc(value)),
        None => esc(value),
    }
}

pub(super) fn kind_label(kind: &str) -> String {
    let zh = match kind {
        "organisation-life" => Some("组织生活"),
        "study" => Some("学习教育"),
        "volunteer-service" => Some("志愿服务"),
        "party-day" => Some("主题党日"),
        "dues" => Some("党费"),
        "other" => Some("其他"),
        _ => None,
    };
    labelled(kind, zh)
}

pub(super) fn category_label(category: &str) -> String {
    let zh = match category {
        "flowing" => Some("流动党员"),
        "migrant-worker" => Some("外出务工"),
        "two-dwelling" => Some("两栖"),
        "elderly" => Some("老党员"),
        "retired" => Some("离退休"),
        "no-post" => Some("无职党员"),
        "in-service" => Some("在职党员进社区"),
        "farmer-herder" => Some("农牧民党员"),
        _ => None,
    };
    labelled(category, zh)
}

pub(super) fn rating_label(rating: &str) -> String {
    let zh = match rating {
        "excellent" => Some("优秀"),
        "good" => Some("良好"),
        "fair" => Some("一般"),
        "poor" => Some("较差"),
        _ => None,
    };
    labelled(rating, zh)
}

pub(super) fn gender_label(gender: &str) -> String {
    let zh = match gender {
        "female" => Some("女"),
        "male" => Some("男"),
        _ => None,
    };
    labelled(gender, zh)
}

pub(super) fn transfer_state_label(state: &str) -> String {
    let zh = match state {
        "open" => Some("办理中"),
        "accepted" => Some("已接收"),
        "rejected" => Some("已拒绝"),
        "cancelled" => Some("已撤回"),
        "superseded" => Some("已作废"),
        _ => None,
    };
    format!(
        r#"<span class="tstate {}">{}</span>"#,
        esc(state),
        labelled(state, zh)
    )
}

pub(super) fn peer_state(state: PeerState) -> &'static str {
    match state {
        PeerState::Connected => r#"<span class="state connected">已连接 connected</span>"#,
        PeerState::Connecting => r#"<span class="state connecting">连接中 connecting</span>"#,
        PeerState::Disconnected => r#"<span class="state disconnected">已断开 disconnected</span>"#,
    }
}

/// Which end of a peer connection dialed, for the peers table.
pub(super) fn direction_label(direction: Direction) -> &'static str {
    match direction {
        Direction::Dialed => "拨出 dialed",
        Direction::Accepted => "接入 accepted",
    }
}

/// A piece of dashboard text in Simplified Chinese and English. Shown as `中文 English`
/// (`Display`), or in a section heading with the English in a muted span ([`Label::heading`]).
#[derive(Clone, Copy)]
pub(super) struct Label {
    zh: &'static str,
    en: &'static str,
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.zh, self.en)
    }
}

impl Label {
    /// `中文 <span class="en">English</span>`, for `<h2>`.
    pub(super) fn heading(self) -> String {
        format!(r#"{} <span class="en">{}</span>"#, self.zh, self.en)
    }
}

const fn label(zh: &'static str, en: &'static str) -> Label {
    Label { zh, en }
}

// The page frame and signing in.
pub(super) const RECORD_SYNC: Label = label("党员档案同步", "Record sync");
pub(super) const OFFICE: Label = label("本组织", "Office");
pub(super) const NODE: Label = label("节点", "Node");
pub(super) const SIGN_OUT: Label = label("登出", "Sign out");
pub(super) const SIGN_IN: Label = label("登入", "Sign in");
pub(super) const ADMIN_SIGN_IN: Label = label("管理员登入", "Admin sign-in");
pub(super) const ADMIN_TOKEN: Label = label("管理令牌", "Admin token");
pub(super) const TOKEN_HINT: Label = label(
    "令牌在节点的 <code>DATA_DIR/admin.token</code>",
    "The token is in the node's <code>DATA_DIR/admin.token</code>",
);
pub(super) const WRONG_TOKEN: Label = label(
    "令牌不正确",
    "Wrong token: copy it from DATA_DIR/admin.token",
);
pub(super) const NO_SUCH_CASE_FILE: Label =
    label("本节点没有此档案", "This node holds no such case file");
pub(super) const INTERNAL_ERROR: Label = label("内部错误", "Internal error");
pub(super) const BACK_TO_OVERVIEW: Label = label("返回总览", "Back to overview");
pub(super) const OVERVIEW: Label = label("总览", "Overview");
pub(super) const THIS_OFFICE: Label = label("本组织", "this office");

// Sync status.
pub(super) const SYNC_STATUS: Label = label("同步状态", "Sync status");
pub(super) const UPDATED: Label = label("更新", "Updated");
pub(super) const CASE_FILES: Label = label("党员档案", "Case files");
pub(super) const ROSTERS: Label = label("组织名册", "Rosters");
pub(super) const CONFLICTS: Label = label("冲突", "Conflicts");
pub(super) const QUARANTINE: Label = label("隔离", "Quarantine");
pub(super) const REFUSED: Label = label("拒收", "Refused");
pub(super) const CERT_EXPIRES: Label = label("证书到期", "Certificate expires");
pub(super) const PEER: Label = label("对等节点", "Peer");
pub(super) const STATE: Label = label("状态", "State");
pub(super) const DIRECTION: Label = label("方向", "Direction");
pub(super) const LAST_SYNC: Label = label("最近同步", "Last sync");
pub(super) const PENDING: Label = label("待同步", "Pending");
pub(super) const LAST_ERROR: Label = label("最近错误", "Last error");
pub(super) const NO_PEERS: Label = label("尚无对等节点", "No peers yet");

// Member search.
pub(super) const MEMBER_SEARCH: Label = label("党员搜索", "Member search");
pub(super) const NAME: Label = label("姓名", "Name");
pub(super) const SEARCH: Label = label("搜索", "Search");
pub(super) const TWO_DWELLING: Label = label("两栖", "Two-dwelling");

/// The search heading before a search: how many members the office sees.
pub(super) fn members_here(n: usize) -> String {
    format!("本组织及下级共 {n} 名党员 {n} members with home or residence here or below")
}

/// The search heading after a search for `query` (already escaped).
pub(super) fn members_found(query: &str, n: usize) -> String {
    format!("「{query}」: {n} 名 {n} found")
}

/// Under a search answer cut at its limit: how many more there are.
pub(super) fn more_found(n: usize) -> String {
    format!("另有 {n} 名，请缩小搜索 {n} more: narrow the search")
}

// Conflicts, quarantine and transfers.
pub(super) const NO_CONFLICTS: Label = label("无未确认冲突", "No unacknowledged conflicts");
pub(super) const MEMBER: Label = label("党员", "Member");
pub(super) const KIND: Label = label("类型", "Kind");
pub(super) const RULE: Label = label("规则", "Rule");
pub(super) const WINNER: Label = label("胜出", "Winner");
pub(super) const NO_REFUSED_CHANGES: Label = label("没有被拒收的变更", "No refused changes");
pub(super) const AT: Label = label("时间", "At");
pub(super) const SOURCE_PEER: Label = label("来源", "Peer");
pub(super) const DOC: Label = label("文件", "Doc");
pub(super) const CLAIMED_AUTHOR: Label = label("声称作者", "Claimed author");
pub(super) const REASON: Label = label("原因", "Reason");
pub(super) const TRANSFERS: Label = label("组织关系转接", "Transfers");
pub(super) const NO_OPEN_TRANSFERS: Label = label("没有办理中的转接", "No open transfers");
pub(super) const FROM: Label = label("转出", "From");
pub(super) const TO: Label = label("转入", "To");

// Bundles: carrying changes on a USB stick while a link is down.
pub(super) const BUNDLES: Label = label("U盘传递（断网时）", "Carry by USB stick (link down)");
pub(super) const BUNDLE_FOR: Label = label("发往", "For");
pub(super) const BUNDLE_ALL: Label = label(
    "全部（不只对方缺少的）",
    "Everything (not only what it lacks)",
);
pub(super) const BUNDLE_DOWNLOAD: Label = label("下载数据包", "Download bundle");
pub(super) const BUNDLE_IMPORT: Label = label("导入数据包", "Import bundle");
pub(super) const BUNDLE_HINT: Label = label(
    "每项变更都经过与联网同步相同的权限检查",
    "Every change passes the same checks as over a link",
);

// A member's case file.
pub(super) const CASE_FILE: Label = label("党员档案", "Case file");
pub(super) const GENDER: Label = label("性别", "Gender");
pub(super) const ETHNICITY: Label = label("民族", "Ethnicity");
pub(super) const BORN: Label = label("出生日期", "Born");
pub(super) const JOINED: Label = label("入党日期", "Joined");
pub(super) const ID_NUMBER: Label = label("身份证号", "ID number");
pub(super) const PHONE: Label = label("电话", "Phone");
pub(super) const EDUCATION: Label = label("学历", "Education");
pub(super) const CATEGORIES: Label = label("类别", "Categories");
pub(super) const FILE_ID: Label = label("档案编号", "File id");
pub(super) const RESIDENCE: Label = label("两栖居住地", "Residence");
pub(super) const SINCE: Label = label("起", "Since");
pub(super) const UNTIL: Label = label("至", "Until");
pub(super) const REPORTED_IN: Label = label("报到", "Reported in");
pub(super) const NOT_TWO_DWELLING: Label = label("非两栖", "not two-dwelling");
pub(super) const AFFILIATION: Label = label("组织关系", "Affiliation");
pub(super) const HOME_ORG: Label = label("组织关系所在党组织", "Home org");
pub(super) const CONTACT_PERSON: Label = label("联系责任人", "Contact person");
pub(super) const LAST_CONTACT: Label = label("最近联系", "Last contact");
pub(super) const ACTIVITIES: Label = label("活动", "Activities");
pub(super) const POINTS_TOTAL: Label = label("积分合计", "Points total");
pub(super) const DATE: Label = label("日期", "Date");
pub(super) const DESCRIPTION: Label = label("内容", "Description");
pub(super) const POINTS: Label = label("积分", "Points");
pub(super) const RECORDED_BY: Label = label("记录组织", "Recorded by");
pub(super) const NO_ACTIVITIES: Label = label("尚无活动记录", "No activities yet");
pub(super) const COMMENT: Label = label("加注意见", "Comment");
pub(super) const REVIEWS: Label = label("半年审核", "Reviews");
pub(super) const NO_REVIEWS: Label = label("尚无审核", "No reviews yet");
pub(super) const PERIOD: Label = label("期间", "Period");
pub(super) const RATING: Label = label("评定", "Rating");
pub(super) const REVIEW_COMMENT: Label = label("意见", "Comment");
pub(super) const REVIEWED_BY: Label = label("审核组织", "Reviewed by");
pub(super) const NO_TRANSFERS: Label = label("尚无转接", "No transfers");
pub(super) const OPENED_BY: Label = label("发起", "Opened by");
