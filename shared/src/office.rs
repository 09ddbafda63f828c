//! The 27 province-level divisions where the company runs a consultation
//! office (咨询处), keyed by their GB/T 2260 two-digit code.
//!
//! Mainland China has 31 province-level divisions; the company has offices in
//! 27 of them (the seeds say "27个省、市、自治区"). The four without an office
//! here are 海南 (46), 西藏 (54), 宁夏 (64) and 新疆 (65).

use crate::DomainError;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Office {
    pub code: &'static str,
    pub name: &'static str,
}

pub const OFFICES: [Office; 27] = [
    Office {
        code: "11",
        name: "北京",
    },
    Office {
        code: "12",
        name: "天津",
    },
    Office {
        code: "13",
        name: "河北",
    },
    Office {
        code: "14",
        name: "山西",
    },
    Office {
        code: "15",
        name: "内蒙古",
    },
    Office {
        code: "21",
        name: "辽宁",
    },
    Office {
        code: "22",
        name: "吉林",
    },
    Office {
        code: "23",
        name: "黑龙江",
    },
    Office {
        code: "31",
        name: "上海",
    },
    Office {
        code: "32",
        name: "江苏",
    },
    Office {
        code: "33",
        name: "浙江",
    },
    Office {
        code: "34",
        name: "安徽",
    },
    Office {
        code: "35",
        name: "福建",
    },
    Office {
        code: "36",
        name: "江西",
    },
    Office {
        code: "37",
        name: "山东",
    },
    Office {
        code: "41",
        name: "河南",
    },
    Office {
        code: "42",
        name: "湖北",
    },
    Office {
        code: "43",
        name: "湖南",
    },
    Office {
        code: "44",
        name: "广东",
    },
    Office {
        code: "45",
        name: "广西",
    },
    Office {
        code: "50",
        name: "重庆",
    },
    Office {
        code: "51",
        name: "四川",
    },
    Office {
        code: "52",
        name: "贵州",
    },
    Office {
        code: "53",
        name: "云南",
    },
    Office {
        code: "61",
        name: "陕西",
    },
    Office {
        code: "62",
        name: "甘肃",
    },
    Office {
        code: "63",
        name: "青海",
    },
];

/// Looks an office up by its code (`44`) or its Chinese name (`广东`).
pub fn office(code_or_name: &str) -> Result<Office, DomainError> {
    let key = code_or_name.trim();
    OFFICES
        .iter()
        .find(|o| o.code == key || o.name == key)
        .copied()
        .ok_or_else(|| DomainError::UnknownOffice(key.to_string()))
}

/// An office as people read it, `广东 (44)`; a code that names no office
/// as it is.
pub fn label(code: &str) -> String {
    match office(code) {
        Ok(o) => format!("{} ({})", o.name, o.code),
        Err(_) => code.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_sorted() {
        for pair in OFFICES.windows(2) {
            assert!(pair[0].code < pair[1].code, "{:?}", pair);
        }
    }

    #[test]
    fn lookup_by_code_or_name() {
        assert_eq!(office("44").unwrap().name, "广东");
        assert_eq!(office("青海").unwrap().code, "63");
        assert_eq!(office("46"), Err(DomainError::UnknownOffice("46".into())));
        assert!(office("").is_err());
    }
}
