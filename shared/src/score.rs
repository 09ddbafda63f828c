//! 客情岗位评定: the evaluation score of one staff member over a period.
//!
//! The handbook's own method of calculation is not in the seeds (its
//! section is cut off), so the score here is a weighted sum of counts
//! that headquarters configures in its catalogue (`[weights]`): each item
//! counted for the person in the period, times its weight. The defaults
//! ([`ScoreWeights::default`]) reward what the handbook asks of the
//! department: registering calls, bringing callers to visit and to buy,
//! following up on time, repurchase, home visits and deliveries, typical
//! cases developed and problems resolved. Counts rather than rates: a rate
//! over two callers says little, and counts add up across offices.

use serde::{Deserialize, Serialize};

/// The items of the score: key (as in the catalogue's `[weights]` and
/// JSON) and Chinese label, in the order they are shown.
pub const ITEMS: [(&str, &str); 9] = [
    ("calls", "咨询登记"),
    ("callers_visited", "转化到堂"),
    ("callers_bought", "转化购买"),
    ("followups_on_time", "按时回访"),
    ("repeat_buyers", "复购患者"),
    ("home_visits", "家访"),
    ("deliveries", "外送"),
    ("typical_cases", "典型病例"),
    ("problems_resolved", "问题解决"),
];

/// The largest weight an item may carry.
pub const MAX_WEIGHT: f64 = 1000.0;

/// Points per unit of each item, in the order of [`ITEMS`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "std::collections::BTreeMap<String, f64>")]
#[serde(into = "std::collections::BTreeMap<String, f64>")]
pub struct ScoreWeights(pub [f64; 9]);

// Every weight is a number from 0 to MAX_WEIGHT (`set` refuses NaN), so
// equality is total.
impl Eq for ScoreWeights {}

impl Default for ScoreWeights {
    /// 1 per call, 2 per caller brought to visit, 5 per caller brought to
    /// buy, 1 per follow-up on time, 5 per repeat buyer, 3 per home visit,
    /// 2 per delivery, 10 per typical case, 5 per problem resolved.
    fn default() -> Self {
        ScoreWeights([1.0, 2.0, 5.0, 1.0, 5.0, 3.0, 2.0, 10.0, 5.0])
    }
}

impl ScoreWeights {
    /// The weight of item `key`.
    pub fn get(&self, key: &str) -> Option<f64> {
        ITEMS.iter().position(|(k, _)| *k == key).map(|i| self.0[i])
    }

    /// Sets item `key` to `weight` (0 to [`MAX_WEIGHT`]).
    pub fn set(&mut self, key: &str, weight: f64) -> Result<(), String> {
        let i = ITEMS.iter().position(|(k, _)| *k == key).ok_or_else(|| {
            format!(
                "`{key}` is no score item; one of {}",
                ITEMS.map(|(k, _)| k).join(", ")
            )
        })?;
        if !(0.0..=MAX_WEIGHT).contains(&weight) {
            return Err(format!("weight of `{key}`: 0 to {MAX_WEIGHT}"));
        }
        self.0[i] = weight;
        Ok(())
    }

    /// The score of `counts` (in the order of [`ITEMS`]), to the hundredth.
    pub fn score(&self, counts: &[u64; 9]) -> f64 {
        let sum: f64 = counts.iter().zip(self.0).map(|(n, w)| *n as f64 * w).sum();
        (sum * 100.0).round() / 100.0
    }
}

impl TryFrom<std::collections::BTreeMap<String, f64>> for ScoreWeights {
    type Error = String;
    fn try_from(map: std::collections::BTreeMap<String, f64>) -> Result<Self, String> {
        let mut w = ScoreWeights::default();
        for (k, v) in map {
            w.set(&k, v)?;
        }
        Ok(w)
    }
}

impl From<ScoreWeights> for std::collections::BTreeMap<String, f64> {
    fn from(w: ScoreWeights) -> Self {
        ITEMS.iter().map(|(k, _)| k.to_string()).zip(w.0).collect()
    }
}

/// Competition ranks ("1224") of `scores` within each group: the same
/// score, the same rank. Returns one rank per input, in input order.
pub fn ranks<G: Ord + Clone>(scores: &[(G, f64)]) -> Vec<u32> {
    scores
        .iter()
        .map(|(g, s)| 1 + scores.iter().filter(|(h, t)| h == g && t > s).count() as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_score_is_the_weighted_sum_and_ranks_tie() {
        let w = ScoreWeights::default();
        // 10 calls, 3 visited, 1 bought, 4 on time, 1 repeat, 2 home
        // visits, 1 delivery, 1 typical, 0 problems:
        // 10 + 6 + 5 + 4 + 5 + 6 + 2 + 10 + 0 = 48.
        assert_eq!(w.score(&[10, 3, 1, 4, 1, 2, 1, 1, 0]), 48.0);
        let mut w2 = w;
        w2.set("calls", 0.5).unwrap();
        assert_eq!(w2.score(&[3, 0, 0, 0, 0, 0, 0, 0, 0]), 1.5);
        assert!(w2.set("smiles", 1.0).is_err());
        assert!(w2.set("calls", -1.0).is_err());
        assert!(w2.set("calls", f64::NAN).is_err());
        let r = ranks(&[("a", 5.0), ("a", 9.0), ("b", 1.0), ("a", 5.0), ("a", 1.0)]);
        assert_eq!(r, vec![2, 1, 1, 2, 4]);
        let json = serde_json::to_string(&w2).unwrap();
        let back: ScoreWeights = serde_json::from_str(&json).unwrap();
        assert_eq!(back, w2);
        let partial: ScoreWeights = serde_json::from_str(r#"{"typical_cases": 20}"#).unwrap();
        assert_eq!(partial.get("typical_cases"), Some(20.0));
        assert_eq!(partial.get("calls"), Some(1.0));
    }
}
