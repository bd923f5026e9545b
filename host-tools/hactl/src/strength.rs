//! Passphrase strength: the zxcvbn estimator (a port of Dropbox's), not a hand-rolled rule.

use serde::Serialize;
use zxcvbn::{zxcvbn, Score};

/// Fewest characters accepted whatever the estimator says.
pub const MIN_LEN: usize = 12;
/// Lowest zxcvbn score accepted: 4 ("more than 10^10 guesses").
pub const MIN_SCORE: u8 = 4;

/// What the estimator thinks of a passphrase. Holds no part of the passphrase.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// zxcvbn score, 0 (guessable) to 4 (very unguessable).
    pub score: u8,
    /// log10 of the estimated number of guesses.
    pub guesses_log10: f64,
    /// Length in characters.
    pub length: usize,
    /// Accepted for a cluster key.
    pub accepted: bool,
    /// Why it was refused, or the estimator's warning.
    pub reason: Option<String>,
    /// The estimator's suggestions.
    pub suggestions: Vec<String>,
}

/// Rates `passphrase`; `context` are words an attacker knows (cluster name, serials, ...)
/// which the estimator treats as guessable.
pub fn check(passphrase: &str, context: &[&str]) -> Verdict {
    let length = passphrase.chars().count();
    let e = zxcvbn(passphrase, context);
    let score = match e.score() {
        Score::Zero => 0,
        Score::One => 1,
        Score::Two => 2,
        Score::Three => 3,
        _ => 4,
    };
    let warning = e
        .feedback()
        .and_then(|f| f.warning())
        .map(|w| w.to_string());
    let suggestions = e
        .feedback()
        .map(|f| f.suggestions().iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    let reason = if length < MIN_LEN {
        Some(format!(
            "too short: {length} characters, at least {MIN_LEN} needed"
        ))
    } else if score < MIN_SCORE {
        Some(format!(
            "too guessable: score {score}/4, {MIN_SCORE} needed{}",
            warning
                .as_ref()
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        ))
    } else {
        warning
    };
    Verdict {
        score,
        guesses_log10: e.guesses_log10(),
        length,
        accepted: length >= MIN_LEN && score >= MIN_SCORE,
        reason,
        suggestions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_ones_refused() {
        for p in [
            "password",
            "Password123!",
            "correcthorse",
            "aaaaaaaaaaaaaaaa",
            "qwertyuiop123",
        ] {
            let v = check(p, &[]);
            assert!(!v.accepted, "{p} accepted: {v:?}");
            assert!(v.reason.is_some());
        }
    }

    #[test]
    fn short_refused_even_if_random() {
        let v = check("x7#Qp2!v", &[]);
        assert!(!v.accepted);
        assert!(v.reason.unwrap().contains("too short"));
    }

    #[test]
    fn context_words_count_against() {
        let p = "stormcluster-paris-2026";
        let with = check(p, &["stormcluster", "paris"]);
        let without = check(p, &[]);
        assert!(with.guesses_log10 < without.guesses_log10);
    }

    #[test]
    fn strong_accepted() {
        let v = check("tumble orbit quiver lantern 47 marsh", &[]);
        assert!(v.accepted, "{v:?}");
        assert_eq!(v.score, 4);
    }
}
