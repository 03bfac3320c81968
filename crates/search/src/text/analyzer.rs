//! Text analysis: UAX #29 word segmentation, tokens with at least one alphanumeric character,
//! lowercasing, stop words, Snowball stemming. The same analyzer runs on documents and on queries.

use rust_stemmers::{Algorithm, Stemmer};
use serde::{Deserialize, Serialize};
use unicode_segmentation::UnicodeSegmentation;

/// Lucene's English stop words (`EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`).
pub const ENGLISH_STOP_WORDS: [&str; 33] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// Tokens longer than this (in bytes, after lowercasing) are dropped: they are nearly always
/// base64, hashes or URLs, and would bloat the term dictionary.
pub const TOKEN_BYTES_MAX: usize = 100;

/// A language of the Snowball stemmers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Language {
    Arabic,
    Danish,
    Dutch,
    #[default]
    English,
    Finnish,
    French,
    German,
    Greek,
    Hungarian,
    Italian,
    Norwegian,
    Portuguese,
    Romanian,
    Russian,
    Spanish,
    Swedish,
    Tamil,
    Turkish,
}

impl Language {
    fn algorithm(self) -> Algorithm {
        use Language::*;
        match self {
            Arabic => Algorithm::Arabic,
            Danish => Algorithm::Danish,
            Dutch => Algorithm::Dutch,
            English => Algorithm::English,
            Finnish => Algorithm::Finnish,
            French => Algorithm::French,
            German => Algorithm::German,
            Greek => Algorithm::Greek,
            Hungarian => Algorithm::Hungarian,
            Italian => Algorithm::Italian,
            Norwegian => Algorithm::Norwegian,
            Portuguese => Algorithm::Portuguese,
            Romanian => Algorithm::Romanian,
            Russian => Algorithm::Russian,
            Spanish => Algorithm::Spanish,
            Swedish => Algorithm::Swedish,
            Tamil => Algorithm::Tamil,
            Turkish => Algorithm::Turkish,
        }
    }
}

/// How one text field is analyzed (`text_options` in a schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextOptions {
    /// The stemmer's language (default English).
    #[serde(default)]
    pub language: Language,
    /// Snowball stemming on (default) or off.
    #[serde(default = "yes")]
    pub stemming: bool,
    /// Stop words: absent = the language's list (Lucene's English list; none for other languages),
    /// `[]` = none, or the words to drop (matched after lowercasing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_words: Option<Vec<String>>,
}

fn yes() -> bool {
    true
}

impl Default for TextOptions {
    /// English, stemming, Lucene's English stop words.
    fn default() -> Self {
        TextOptions {
            language: Language::English,
            stemming: true,
            stop_words: None,
        }
    }
}

/// One token: the analyzed term and its position among the document's words (stop words count
/// as positions, so a phrase with a stop word in it does not match the words without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The term (lowercased, stemmed).
    pub term: String,
    /// Word position, from 0.
    pub position: u32,
}

/// An analyzer built from [`TextOptions`].
pub struct Analyzer {
    stemmer: Option<Stemmer>,
    stop: Vec<String>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("stemming", &self.stemmer.is_some())
            .field("stop", &self.stop.len())
            .finish()
    }
}

impl Analyzer {
    /// The analyzer for `opts`.
    pub fn new(opts: &TextOptions) -> Analyzer {
        let mut stop: Vec<String> = match &opts.stop_words {
            Some(words) => words.iter().map(|w| w.to_lowercase()).collect(),
            None if opts.language == Language::English => {
                ENGLISH_STOP_WORDS.iter().map(|w| w.to_string()).collect()
            }
            None => Vec::new(),
        };
        stop.sort();
        stop.dedup();
        Analyzer {
            stemmer: opts
                .stemming
                .then(|| Stemmer::create(opts.language.algorithm())),
            stop,
        }
    }

    /// The default analyzer (English, stemming, Lucene's stop words).
    pub fn english() -> Analyzer {
        Analyzer::new(&TextOptions::default())
    }

    /// Calls `f` with each token of `text`, in order.
    pub fn for_each_token(&self, text: &str, mut f: impl FnMut(&str, u32)) {
        let mut position = 0u32;
        for word in text.split_word_bounds() {
            if !word.chars().any(char::is_alphanumeric) {
                continue;
            }
            let pos = position;
            position = position.saturating_add(1);
            let lower = word.to_lowercase();
            if lower.len() > TOKEN_BYTES_MAX || self.stop.binary_search(&lower).is_ok() {
                continue;
            }
            match &self.stemmer {
                Some(s) => f(&s.stem(&lower), pos),
                None => f(&lower, pos),
            }
        }
    }

    /// The tokens of `text`.
    pub fn tokens(&self, text: &str) -> Vec<Token> {
        let mut out = Vec::new();
        self.for_each_token(text, |t, p| {
            out.push(Token {
                term: t.to_owned(),
                position: p,
            })
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(a: &Analyzer, s: &str) -> Vec<String> {
        a.tokens(s).into_iter().map(|t| t.term).collect()
    }

    #[test]
    fn english_segments_lowercases_drops_stop_words_and_stems() {
        let a = Analyzer::english();
        assert_eq!(
            terms(&a, "The Running dogs, and THE cats' naps — in 2024!"),
            ["run", "dog", "cat", "nap", "2024"]
        );
        // Positions count stop words, so "state of the art" keeps its gaps.
        let t = a.tokens("state of the art");
        assert_eq!(t.iter().map(|t| t.position).collect::<Vec<_>>(), vec![0, 3]);
        // Non-ASCII words are words; punctuation-only segments are not.
        assert_eq!(terms(&a, "Über café ... ---"), ["über", "café"]);
        assert!(a.tokens("").is_empty());
        assert!(a.tokens("   ,,, !!").is_empty());
        // Contractions stay one word (UAX #29), and Porter2 strips the possessive.
        assert_eq!(terms(&a, "database's"), ["databas"]);
    }

    #[test]
    fn options_turn_stemming_and_stop_words_off() {
        let a = Analyzer::new(&TextOptions {
            language: Language::English,
            stemming: false,
            stop_words: Some(vec![]),
        });
        assert_eq!(terms(&a, "The Running dogs"), ["the", "running", "dogs"]);
        let g = Analyzer::new(&TextOptions {
            language: Language::German,
            stemming: true,
            stop_words: Some(vec!["Der".into()]),
        });
        assert_eq!(terms(&g, "der Häuser"), ["haus"]);
    }

    #[test]
    fn over_long_tokens_are_dropped_but_keep_their_position() {
        let a = Analyzer::english();
        let long = "x".repeat(TOKEN_BYTES_MAX + 1);
        let t = a.tokens(&format!("alpha {long} beta"));
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].position, 2);
    }
}
