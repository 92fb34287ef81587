//! Text tables and JSON renderings of replies, for people and for scripts.

use semclip_proto::v1::{
    ChannelConfig, ClassifyReply, Fading, LabelScore, MessageInfo, PromptKind, SendReply,
};
use serde_json::{json, Value};

/// A left-aligned text table with a header row and a rule under it.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as lines of text, columns padded to their widest cell.
    pub fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            padded.join("  ").trim_end().to_string()
        };
        let mut out = line(&self.header);
        out.push('\n');
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&rule.join("  "));
        for row in &self.rows {
            out.push('\n');
            out.push_str(&line(row));
        }
        out.push('\n');
        out
    }
}

/// `name` in the protocol's words, for a fading enum value.
pub fn fading_name(fading: i32) -> &'static str {
    match Fading::try_from(fading) {
        Ok(Fading::Awgn) => "awgn",
        Ok(Fading::RayleighBlock) => "rayleigh",
        _ => "unspecified",
    }
}

fn prompt_name(prompt: i32) -> &'static str {
    match PromptKind::try_from(prompt) {
        Ok(PromptKind::Learned) => "learned",
        Ok(PromptKind::Template) => "template",
        _ => "unspecified",
    }
}

/// `label 0.912, label 0.051` for the first `n` scores.
pub fn short_labels(labels: &[LabelScore], n: usize) -> String {
    let parts: Vec<String> = labels
        .iter()
        .take(n)
        .map(|l| format!("{} {:.3}", l.label, l.probability))
        .collect();
    if parts.is_empty() {
        "-".to_string()
    } else {
        parts.join(", ")
    }
}

fn labels_json(labels: &[LabelScore]) -> Value {
    Value::Array(
        labels
            .iter()
            .map(|l| json!({"label": l.label, "probability": l.probability}))
            .collect(),
    )
}

pub fn send_json(file: &str, reply: &SendReply) -> Value {
    let t = reply.timings.unwrap_or_default();
    json!({
        "file": file,
        "message_id": reply.message_id,
        "k": reply.k,
        "snr_db": reply.snr_db,
        "timings_ms": {
            "preprocess": t.preprocess_ms,
            "image_encode": t.image_encode_ms,
            "jscc_encode": t.jscc_encode_ms,
            "link": t.link_ms,
            "total": t.total_ms,
        },
    })
}

pub fn send_text(file: &str, reply: &SendReply) -> String {
    let t = reply.timings.unwrap_or_default();
    format!(
        "{file}: message {} sent, k={} at {:.1} dB; preprocess {:.2} ms, image encode {:.2} ms, \
         JSCC encode {:.2} ms, link {:.2} ms, total {:.2} ms",
        reply.message_id,
        reply.k,
        reply.snr_db,
        t.preprocess_ms,
        t.image_encode_ms,
        t.jscc_encode_ms,
        t.link_ms,
        t.total_ms
    )
}

pub fn classify_json(reply: &ClassifyReply) -> Value {
    json!({
        "message_id": reply.message_id,
        "snr_db": reply.snr_db,
        "prompt": prompt_name(reply.prompt),
        "prior_strength": reply.prior_strength,
        "labels": labels_json(&reply.labels),
    })
}

pub fn classify_text(reply: &ClassifyReply) -> String {
    let correction = if reply.prior_strength > 0.0 {
        format!(", prior correction {:.2}", reply.prior_strength)
    } else {
        String::new()
    };
    let mut out = format!(
        "message {} (received at {:.1} dB, {} prompt{correction})\n",
        reply.message_id,
        reply.snr_db,
        prompt_name(reply.prompt)
    );
    let mut table = Table::new(["rank", "label", "probability", ""]);
    for (i, l) in reply.labels.iter().enumerate() {
        let bar = "#".repeat((l.probability.clamp(0.0, 1.0) * 40.0).round() as usize);
        table.row([
            (i + 1).to_string(),
            l.label.clone(),
            format!("{:.4}", l.probability),
            bar,
        ]);
    }
    out.push_str(&table.render());
    out
}

pub fn message_json(m: &MessageInfo) -> Value {
    json!({
        "message_id": m.message_id,
        "k": m.k,
        "snr_db": m.snr_db,
        "received_unix_ms": m.received_unix_ms,
        "top_labels": labels_json(&m.top_labels),
    })
}

/// One line per message: id, k, SNR, arrival time, top labels.
pub fn message_line(m: &MessageInfo) -> String {
    format!(
        "{}  k={}  {:.1} dB  at {}  {}",
        m.message_id,
        m.k,
        m.snr_db,
        format_unix_ms(m.received_unix_ms),
        short_labels(&m.top_labels, 3)
    )
}

pub fn messages_text(messages: &[MessageInfo]) -> String {
    let mut table = Table::new(["message", "k", "SNR (dB)", "received (UTC)", "top labels"]);
    for m in messages {
        table.row([
            m.message_id.clone(),
            m.k.to_string(),
            format!("{:.1}", m.snr_db),
            format_unix_ms(m.received_unix_ms),
            short_labels(&m.top_labels, 3),
        ]);
    }
    table.render()
}

pub fn channel_json(c: &ChannelConfig) -> Value {
    json!({
        "snr_db": c.snr_db,
        "fading": fading_name(c.fading),
        "seed": c.seed,
        "epoch": c.epoch,
    })
}

pub fn channel_text(c: &ChannelConfig) -> String {
    format!(
        "SNR {:.2} dB, fading {}, seed {}, epoch {}",
        c.snr_db,
        fading_name(c.fading),
        c.seed,
        c.epoch
    )
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in milliseconds; the date is left out.
pub fn format_unix_ms(ms: i64) -> String {
    let day_ms = ms.rem_euclid(86_400_000);
    let (h, m, s, milli) = (
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}.{milli:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns() {
        let mut t = Table::new(["a", "bb"]);
        t.row(["xxx", "y"]);
        assert_eq!(t.render(), "a    bb\n---  --\nxxx  y\n");
    }

    #[test]
    fn unix_ms_is_time_of_day() {
        assert_eq!(format_unix_ms(3_723_004), "01:02:03.004");
    }
}
