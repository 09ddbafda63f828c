//! 活动: activities and promotions (义诊, 讲座, 促销, 节日活动) that bring
//! patients in. Headquarters defines them in its catalogue, for some
//! offices or all; an office's 客情主管 defines its own in the office's
//! roster document. Staff record who took part (a [`Participation`] in the
//! patient's dossier); a report counts, per activity, the participants,
//! the new patients among them, and their visits and purchases from the
//! activity's first day to [`ATTRIBUTION_DAYS`] after its last.
//!
//! [`Participation`]: crate::records::Participation

use crate::DomainError;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Days after an activity's last day in which a participant's purchases
/// are still attributed to it.
pub const ATTRIBUTION_DAYS: u64 = 30;
/// The longest an activity may run.
pub const MAX_DAYS: i64 = 366;

/// The kinds of activity the handbook names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// 义诊: free consultations by the office's doctor.
    Clinic,
    /// 讲座: a health lecture.
    Lecture,
    /// 促销: a sales promotion.
    Promotion,
    /// 节日活动: a festival event.
    Festival,
}

impl ActivityKind {
    pub const ALL: [ActivityKind; 4] = [
        ActivityKind::Clinic,
        ActivityKind::Lecture,
        ActivityKind::Promotion,
        ActivityKind::Festival,
    ];

    pub fn chinese(self) -> &'static str {
        match self {
            ActivityKind::Clinic => "义诊",
            ActivityKind::Lecture => "讲座",
            ActivityKind::Promotion => "促销",
            ActivityKind::Festival => "节日活动",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Clinic => "clinic",
            ActivityKind::Lecture => "lecture",
            ActivityKind::Promotion => "promotion",
            ActivityKind::Festival => "festival",
        }
    }

    /// By its Chinese name or its English one.
    pub fn parse(s: &str) -> Option<ActivityKind> {
        let s = s.trim();
        ActivityKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s || k.chinese() == s)
    }
}

/// One activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// A catalogue code (headquarters' activities) or `<office>-<uuid>`
    /// (an office's own).
    pub id: String,
    pub name: String,
    pub kind: ActivityKind,
    pub starts: NaiveDate,
    pub ends: NaiveDate,
    /// The offices it runs at; empty: every office.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offices: Vec<String>,
    /// The catalogue source (code) that advertises it: its media spend in
    /// the activity's days and offices is the activity's spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The office that defined it; `None`: headquarters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_office: Option<String>,
}

impl Activity {
    /// Whether it runs at `office`.
    pub fn runs_at(&self, office: &str) -> bool {
        match &self.by_office {
            Some(o) => o == office,
            None => self.offices.is_empty() || self.offices.iter().any(|o| o == office),
        }
    }

    /// The last day a participant's visit or purchase is attributed to it.
    pub fn attribution_ends(&self) -> NaiveDate {
        self.ends
            .checked_add_days(chrono::Days::new(ATTRIBUTION_DAYS))
            .unwrap_or(self.ends)
    }

    /// Whether a participation may be recorded on `day`.
    pub fn open_on(&self, day: NaiveDate) -> bool {
        day >= self.starts && day <= self.ends
    }

    /// Checks the fields an activity must hold whoever defines it.
    pub fn check(&self) -> Result<(), DomainError> {
        crate::staff::validate_name("name", &self.name)?;
        if self.ends < self.starts {
            return Err(DomainError::invalid(
                "ends",
                format!(
                    "结束 {} 早于开始 {} ends before it starts",
                    self.ends, self.starts
                ),
            ));
        }
        if (self.ends - self.starts).num_days() >= MAX_DAYS {
            return Err(DomainError::invalid(
                "ends",
                format!("活动最长 {MAX_DAYS} 天 an activity runs at most {MAX_DAYS} days"),
            ));
        }
        for o in self.offices.iter().chain(&self.by_office) {
            crate::office::office(o)?;
        }
        if self.offices.len() > crate::office::OFFICES.len() {
            return Err(DomainError::invalid(
                "offices",
                "more offices than there are",
            ));
        }
        Ok(())
    }

    /// Who defined it, for people: 总部 or the province.
    pub fn defined_by(&self) -> String {
        match &self.by_office {
            None => "总部".into(),
            Some(o) => crate::office::office(o)
                .map(|x| x.name.to_string())
                .unwrap_or_else(|_| o.clone()),
        }
    }
}

/// The activities open to `office` on `day` (to record a participation),
/// from a list of headquarters' and the office's own.
pub fn open_at<'a>(
    activities: &'a [Activity],
    office: &'a str,
    day: NaiveDate,
) -> impl Iterator<Item = &'a Activity> + 'a {
    activities
        .iter()
        .filter(move |a| a.runs_at(office) && a.open_on(day))
}

/// Activities as a text table (Chinese headings), for the command lines.
pub fn table(activities: &[Activity]) -> crate::table::Table {
    use crate::printable::printable;
    let mut t = crate::table::Table::new([
        "编号",
        "名称",
        "类别",
        "开始",
        "结束",
        "办事处",
        "信息来源",
        "发起",
    ]);
    for a in activities {
        t.row([
            printable(&a.id).to_string(),
            printable(&a.name).to_string(),
            a.kind.chinese().to_string(),
            a.starts.to_string(),
            a.ends.to_string(),
            if a.offices.is_empty() && a.by_office.is_none() {
                "全部".to_string()
            } else {
                a.offices
                    .iter()
                    .chain(&a.by_office)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(",")
            },
            printable(a.source.as_deref().unwrap_or("")).to_string(),
            a.defined_by(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn activity() -> Activity {
        Activity {
            id: "clinic-1".into(),
            name: "冬季义诊".into(),
            kind: ActivityKind::Clinic,
            starts: day("2026-11-01"),
            ends: day("2026-11-03"),
            offices: vec!["44".into()],
            source: None,
            by_office: None,
        }
    }

    #[test]
    fn who_it_runs_at_and_when() {
        let a = activity();
        assert!(a.runs_at("44") && !a.runs_at("11"));
        let all = Activity {
            offices: vec![],
            ..activity()
        };
        assert!(all.runs_at("11"));
        let own = Activity {
            offices: vec![],
            by_office: Some("11".into()),
            ..activity()
        };
        assert!(own.runs_at("11") && !own.runs_at("44"));
        assert!(a.open_on(day("2026-11-03")) && !a.open_on(day("2026-11-04")));
        assert_eq!(a.attribution_ends(), day("2026-12-03"));
        let open: Vec<_> = open_at(std::slice::from_ref(&a), "44", day("2026-11-02")).collect();
        assert_eq!(open.len(), 1);
    }

    #[test]
    fn bad_activities_are_refused() {
        assert!(activity().check().is_ok());
        for bad in [
            Activity {
                ends: day("2026-10-31"),
                ..activity()
            },
            Activity {
                ends: day("2027-12-31"),
                ..activity()
            },
            Activity {
                offices: vec!["46".into()],
                ..activity()
            },
            Activity {
                name: " ".into(),
                ..activity()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        assert_eq!(ActivityKind::parse("讲座"), Some(ActivityKind::Lecture));
        assert_eq!(
            ActivityKind::parse("promotion"),
            Some(ActivityKind::Promotion)
        );
        assert_eq!(ActivityKind::parse("庙会"), None);
    }
}
