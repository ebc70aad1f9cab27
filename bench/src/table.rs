//! Markdown output: tables with aligned columns, number formatting, and the goals.

use std::fmt::Write as _;

/// A markdown table; columns whose every cell looks numeric are right-aligned.
#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn looks_numeric(cell: &str) -> bool {
    cell.chars().next().is_some_and(|c| c.is_ascii_digit()) || cell == "n/a" || cell == "–"
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells are left empty, extra cells are dropped.
    pub(crate) fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as markdown, one line per row, ending with a newline.
    pub(crate) fn to_markdown(&self) -> String {
        let n = self.headers.len();
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([self.headers[i].chars().count(), 3])
                .max()
                .unwrap_or(3)
        };
        let widths: Vec<usize> = (0..n).map(width).collect();
        let right: Vec<bool> = (0..n)
            .map(|i| !self.rows.is_empty() && self.rows.iter().all(|r| looks_numeric(&r[i])))
            .collect();
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i] - cell.chars().count();
                if right[i] {
                    let _ = write!(s, " {}{cell} |", " ".repeat(pad));
                } else {
                    let _ = write!(s, " {cell}{} |", " ".repeat(pad));
                }
            }
            s.push('\n');
            s
        };
        let mut out = line(&self.headers);
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            if right[i] {
                let _ = write!(out, " {}: |", "-".repeat(w - 1));
            } else {
                let _ = write!(out, " {} |", "-".repeat(*w));
            }
        }
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// A count per second: thousands separated, no decimals from 100 up.
pub(crate) fn rate(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x < 100.0 {
        return format!("{x:.1}");
    }
    grouped(&format!("{:.0}", x))
}

/// A count, thousands separated: `28,264`.
pub(crate) fn count(n: u64) -> String {
    grouped(&n.to_string())
}

fn grouped(digits: &str) -> String {
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A time given in microseconds, in the unit that reads best.
pub(crate) fn time_us(us: f64) -> String {
    if !us.is_finite() {
        "n/a".into()
    } else if us < 1.0 {
        format!("{:.0} ns", us * 1_000.0)
    } else if us < 100.0 {
        format!("{us:.1} µs")
    } else if us < 1_000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.2} ms", us / 1_000.0)
    }
}

/// A ratio such as `1.52×`; `n/a` when it could not be computed.
pub(crate) fn times(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}×")
    } else {
        "n/a".into()
    }
}

/// Megabytes per second with one decimal.
pub(crate) fn mb_per_s(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "n/a".into()
    }
}

/// A payload size: `100 B`, `10 KB`, `1 MB` (powers of 1000, as the sweep's sizes).
pub(crate) fn size(bytes: usize) -> String {
    if bytes >= 1_000_000 && bytes.is_multiple_of(1_000_000) {
        format!("{} MB", bytes / 1_000_000)
    } else if bytes >= 1_000 && bytes.is_multiple_of(1_000) {
        format!("{} KB", bytes / 1_000)
    } else {
        format!("{bytes} B")
    }
}

/// Which direction of a ratio is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// The ratio must be at least the target.
    AtLeast,
    /// The ratio must be at most the target.
    AtMost,
}

/// A performance goal: a ratio of colony against a peer, and its target.
#[derive(Debug, Clone)]
pub(crate) struct Goal {
    /// Short id, e.g. `P1`.
    pub(crate) id: &'static str,
    /// What is compared.
    pub(crate) what: String,
    /// The bound on the ratio.
    pub(crate) target: f64,
    /// Which side of the bound is good.
    pub(crate) want: Want,
    /// The ratio measured (NaN when not measured).
    pub(crate) measured: f64,
}

impl Goal {
    /// `Some(true)` when met, `None` when not measured.
    pub(crate) fn met(&self) -> Option<bool> {
        if !self.measured.is_finite() {
            return None;
        }
        Some(match self.want {
            Want::AtLeast => self.measured >= self.target,
            Want::AtMost => self.measured <= self.target,
        })
    }

    fn target_text(&self) -> String {
        let op = match self.want {
            Want::AtLeast => "≥",
            Want::AtMost => "≤",
        };
        format!("{op} {}", times(self.target))
    }
}

/// The goals as a markdown table.
pub(crate) fn goals_table(goals: &[Goal]) -> String {
    let mut t = Table::new(&["goal", "colony vs peer", "target", "measured", "status"]);
    for g in goals {
        let status = match g.met() {
            Some(true) => "met",
            Some(false) => "not met",
            None => "not measured",
        };
        t.row(vec![
            g.id.to_string(),
            g.what.clone(),
            g.target_text(),
            times(g.measured),
            status.to_string(),
        ]);
    }
    t.to_markdown()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_and_numbers_right_aligned() {
        let mut t = Table::new(&["system", "req/s"]);
        t.row(vec!["colony".into(), rate(12345.6)]);
        t.row(vec!["tonic+TLS".into(), rate(987.0)]);
        let expected = "\
| system    |  req/s |
| --------- | -----: |
| colony    | 12,346 |
| tonic+TLS |    987 |
";
        assert_eq!(t.to_markdown(), expected);
    }

    #[test]
    fn short_rows_are_filled() {
        let mut t = Table::new(&["a", "b"]);
        t.row(vec!["x".into()]);
        assert_eq!(
            t.to_markdown(),
            "| a   | b   |\n| --- | --- |\n| x   |     |\n"
        );
    }

    #[test]
    fn numbers_format_for_reading() {
        assert_eq!(rate(1_234_567.4), "1,234,567");
        assert_eq!(rate(100.0), "100");
        assert_eq!(rate(42.25), "42.2");
        assert_eq!(rate(f64::NAN), "n/a");
        assert_eq!(count(0), "0");
        assert_eq!(count(28_264), "28,264");
        assert_eq!(count(1_000_000), "1,000,000");
        assert_eq!(time_us(0.85), "850 ns");
        assert_eq!(time_us(45.25), "45.2 µs");
        assert_eq!(time_us(512.4), "512 µs");
        assert_eq!(time_us(12_345.0), "12.35 ms");
        assert_eq!(times(1.5), "1.50×");
        assert_eq!(times(f64::NAN), "n/a");
        assert_eq!(mb_per_s(123.45), "123.5");
        assert_eq!(size(100), "100 B");
        assert_eq!(size(10_000), "10 KB");
        assert_eq!(size(1_000_000), "1 MB");
        assert_eq!(size(1_500), "1500 B");
    }

    #[test]
    fn goals_compare_in_the_right_direction() {
        let goal = |want, measured| Goal {
            id: "P",
            what: "x".into(),
            target: 1.5,
            want,
            measured,
        };
        assert_eq!(goal(Want::AtLeast, 1.6).met(), Some(true));
        assert_eq!(goal(Want::AtLeast, 1.4).met(), Some(false));
        assert_eq!(goal(Want::AtMost, 1.4).met(), Some(true));
        assert_eq!(goal(Want::AtMost, 1.6).met(), Some(false));
        assert_eq!(goal(Want::AtMost, f64::NAN).met(), None);
        let table = goals_table(&[goal(Want::AtLeast, 1.6), goal(Want::AtMost, 1.6)]);
        assert!(
            table.contains("| ≥ 1.50× |    1.60× | met     |"),
            "{table}"
        );
        assert!(
            table.contains("| ≤ 1.50× |    1.60× | not met |"),
            "{table}"
        );
    }
}
