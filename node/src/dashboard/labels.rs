//! The names the dashboard shows for the values a member's file holds (activity kinds,
//! categories, ratings, transfer states, peer states): Simplified Chinese first, then the
//! English value, so both the office staff and the logs' vocabulary can be read.

use crate::status::PeerState;

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
pub(super) fn direction_label(direction: &str) -> &str {
    match direction {
        "dialed" => "拨出 dialed",
        "accepted" => "接入 accepted",
        other => other,
    }
}
