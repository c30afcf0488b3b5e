//! The Prometheus text exposition format (0.0.4), written by hand: a metric family is a
//! `# HELP` and a `# TYPE` line followed by its samples, `name{label="value",...} number`.
//!
//! A few lines of formatting, so no crate: `prometheus-client` would also bring its own
//! metric storage (families behind locks), while our counters are sharded atomics summed
//! only when scraped (see [`super::metrics::Metrics`]), which keeps the token cache hit free
//! of locks; only its encoder would be used, and this is that encoder.

use std::fmt::{Display, Write as _};

/// What kind of metric a family is (the `# TYPE` word).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// `_sum` and `_count` samples.
    Summary,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        }
    }
}

/// Collects families into one exposition text.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    out: String,
}

impl Encoder {
    /// Starts a family: its help text and type.
    pub(crate) fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {}",
            kind.word()
        );
    }

    /// One sample of the current family; label values are escaped.
    pub(crate) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The text.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Escapes a label value as the exposition format requires.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_is_help_type_then_samples_with_escaped_labels() {
        let mut e = Encoder::default();
        e.family("x_total", Kind::Counter, "Things.");
        e.sample("x_total", &[], 1);
        e.sample("x_total", &[("a", "q\"\\\n"), ("b", "c")], 2.5);
        assert_eq!(
            e.finish(),
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total 1\n\
             x_total{a=\"q\\\"\\\\\\n\",b=\"c\"} 2.5\n"
        );
    }
}
