//! Turns one run's record (the JSON lines the benches append through
//! `fogbank_testkit::bench`) into what a reader keeps: `bench-results.json`
//! (every figure with its peer's, the ratio, the machine, the date and the
//! git revision), the generated tables of BENCHMARKS.md, and SVG plots of
//! the ratios, the latency distributions and the scale curves.
//!
//! ```text
//! bench-report --results RUN.jsonl --json OUT.json --markdown BENCHMARKS.md --plots DIR [--mode quick|full]
//! ```
//!
//! The plots are drawn here, as plain SVG, rather than with a plotting
//! crate: three kinds of chart do not pay for a dependency's build.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde_json::{Value, json};

const BEGIN: &str = "<!-- scripts/bench: generated from here -->";
const END: &str = "<!-- scripts/bench: generated to here -->";

struct Args {
    results: PathBuf,
    json: PathBuf,
    markdown: PathBuf,
    plots: PathBuf,
    mode: String,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("bench-report: {message}");
            eprintln!(
                "usage: bench-report --results RUN.jsonl --json OUT.json --markdown FILE.md --plots DIR [--mode quick|full]"
            );
            return ExitCode::from(2);
        }
    };
    match report(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bench-report: {message}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(name) = flag.strip_prefix("--") else {
            return Err(format!("unexpected argument {flag:?}"));
        };
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        named.insert(name.to_owned(), value);
    }
    let mut take = |name: &str| named.remove(name).ok_or(format!("--{name} is missing"));
    Ok(Args {
        results: take("results")?.into(),
        json: take("json")?.into(),
        markdown: take("markdown")?.into(),
        plots: take("plots")?.into(),
        mode: take("mode").unwrap_or_else(|_| "full".to_owned()),
    })
}

/// A figure as recorded, with its ratio: above 1 is fogbank ahead.
struct Figure {
    bench: String,
    area: String,
    measure: String,
    value: Option<f64>,
    unit: String,
    better: String,
    peer: Option<String>,
    peer_value: Option<f64>,
}

impl Figure {
    fn ratio(&self) -> Option<f64> {
        let (ours, peer) = (self.value?, self.peer_value?);
        let ratio = if self.better == "lower" {
            peer / ours
        } else {
            ours / peer
        };
        ratio.is_finite().then_some(ratio)
    }
}

struct Series {
    chart: String,
    x: String,
    y: String,
    x_scale: String,
    name: String,
    points: Vec<(f64, f64)>,
}

fn report(args: &Args) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.results)
        .map_err(|e| format!("cannot read {}: {e}", args.results.display()))?;
    let (mut figures, mut series) = (Vec::new(), Vec::new());
    for (number, line) in text.lines().enumerate() {
        let line: Value = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: {e}", args.results.display(), number + 1))?;
        let text_of = |key: &str| line[key].as_str().unwrap_or_default().to_owned();
        match line["kind"].as_str() {
            Some("figure") => figures.push(Figure {
                bench: text_of("bench"),
                area: text_of("area"),
                measure: text_of("measure"),
                value: line["value"].as_f64(),
                unit: text_of("unit"),
                better: text_of("better"),
                peer: line["peer"].as_str().map(str::to_owned),
                peer_value: line["peer_value"].as_f64(),
            }),
            Some("series") => series.push(Series {
                chart: text_of("chart"),
                x: text_of("x"),
                y: text_of("y"),
                x_scale: text_of("x_scale"),
                name: text_of("series"),
                points: line["points"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                    .collect(),
            }),
            _ => {
                return Err(format!(
                    "{}:{}: no kind",
                    args.results.display(),
                    number + 1
                ));
            }
        }
    }
    let run = Run::now(&args.mode);

    let results = json!({
        "machine": run.machine,
        "date": run.date,
        "git_revision": run.revision,
        "mode": run.mode,
        "figures": figures.iter().map(|f| json!({
            "bench": f.bench,
            "area": f.area,
            "measure": f.measure,
            "figure": f.value,
            "unit": f.unit,
            "better": f.better,
            "peer": f.peer,
            "peer_figure": f.peer_value,
            "ratio": f.ratio(),
        })).collect::<Vec<_>>(),
        "series": series.iter().map(|s| json!({
            "chart": s.chart, "series": s.name, "x": s.x, "y": s.y, "points": s.points,
        })).collect::<Vec<_>>(),
    });
    write(
        &args.json,
        &serde_json::to_string_pretty(&results).unwrap_or_default(),
    )?;

    std::fs::create_dir_all(&args.plots)
        .map_err(|e| format!("cannot make {}: {e}", args.plots.display()))?;
    let mut plots = vec![];
    let ratios = args.plots.join("ratios.svg");
    write(&ratios, &ratio_chart(&figures, &run))?;
    plots.push(("Ratios to the peers".to_owned(), ratios));
    let mut charts: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
    for s in &series {
        charts.entry(&s.chart).or_default().push(s);
    }
    for (title, members) in charts {
        let path = args.plots.join(format!("{}.svg", slug(title)));
        write(&path, &line_chart(title, &members))?;
        plots.push((title.to_owned(), path));
    }

    let section = markdown(&figures, &run, &plots, &args.markdown);
    let existing = std::fs::read_to_string(&args.markdown).unwrap_or_default();
    write(&args.markdown, &splice(&existing, &section))?;
    println!(
        "bench-report: {} figures, {} series; wrote {}, {} and {} plots in {}",
        figures.len(),
        series.len(),
        args.json.display(),
        args.markdown.display(),
        plots.len(),
        args.plots.display()
    );
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The machine, the moment and the code a run measured.
struct Run {
    machine: Value,
    date: String,
    revision: String,
    mode: String,
}

impl Run {
    fn now(mode: &str) -> Run {
        let output = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        let file_field = |path: &str, key: &str| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once([':', '='])?;
                    (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
                })
                .unwrap_or_default()
        };
        let memory_gib = file_field("/proc/meminfo", "MemTotal")
            .trim_end_matches("kB")
            .trim()
            .parse::<f64>()
            .map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0)
            .unwrap_or(0.0);
        let dirty = !output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
        let mut revision = output("git", &["rev-parse", "--short=12", "HEAD"]);
        if dirty {
            revision.push_str("-dirty");
        }
        Run {
            machine: json!({
                "cores": fogbank_testkit::bench::cores(),
                "cpu": file_field("/proc/cpuinfo", "model name"),
                "memory_gib": memory_gib,
                "os": file_field("/etc/os-release", "PRETTY_NAME"),
                "kernel": output("uname", &["-r"]),
            }),
            date: output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            revision,
            mode: mode.to_owned(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} cores ({}), {} GiB, {}; {} at git {}, {} run",
            self.machine["cores"],
            self.machine["cpu"].as_str().unwrap_or("?"),
            self.machine["memory_gib"],
            self.machine["os"].as_str().unwrap_or("?"),
            self.date,
            self.revision,
            self.mode
        )
    }
}

// ------------------------------------------------------------ markdown

fn markdown(figures: &[Figure], run: &Run, plots: &[(String, PathBuf)], md: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(out, "## The latest run of `./scripts/bench`\n");
    let _ = writeln!(
        out,
        "Written by `./scripts/bench` (do not edit by hand: the next run replaces it). \
         {}. Every peer ran in the same run as fogbank, on the same cores. The ratio \
         is oriented so that above 1 is fogbank ahead (fogbank ÷ peer for rates, \
         peer ÷ fogbank for latencies and sizes). The same figures, machine-readable: \
         `bench-results.json`.\n",
        run.describe()
    );
    let mut areas: Vec<&str> = Vec::new();
    for f in figures {
        if !areas.contains(&f.area.as_str()) {
            areas.push(&f.area);
        }
    }
    for area in areas {
        let _ = writeln!(out, "### {area}\n");
        let _ = writeln!(out, "| measure | fogbank | peer, same run | ratio |");
        let _ = writeln!(out, "|---|---|---|---|");
        for f in figures.iter().filter(|f| f.area == area) {
            let peer = match (&f.peer, f.peer_value) {
                (Some(name), Some(v)) => format!("{name}: {}", amount(v, &f.unit)),
                (Some(name), None) => format!("{name}: not measured"),
                _ => "—".to_owned(),
            };
            let ratio = f.ratio().map_or("—".to_owned(), |r| format!("{r:.2}"));
            let value = f
                .value
                .map_or("not measured".to_owned(), |v| amount(v, &f.unit));
            let _ = writeln!(out, "| {} | {value} | {peer} | {ratio} |", f.measure);
        }
        let _ = writeln!(out);
    }
    let base = md.parent().unwrap_or(Path::new("."));
    for (title, path) in plots {
        let relative = path.strip_prefix(base).unwrap_or(path);
        let _ = writeln!(out, "![{title}]({})\n", relative.display());
    }
    let _ = writeln!(out, "{END}");
    out
}

/// `existing` with the generated section replaced, or put before the first
/// second-level heading when it has none yet.
fn splice(existing: &str, section: &str) -> String {
    if let (Some(begin), Some(end)) = (existing.find(BEGIN), existing.find(END))
        && begin < end
    {
        let after = &existing[end + END.len()..];
        return format!("{}{}{}", &existing[..begin], section.trim_end(), after);
    }
    match existing.find("\n## ") {
        Some(at) => format!("{}{section}{}", &existing[..at + 1], &existing[at..]),
        None => format!("{existing}\n{section}"),
    }
}

/// A figure as a person reads it: thousands grouped, sensible decimals.
fn amount(value: f64, unit: &str) -> String {
    let digits = if value.abs() >= 100.0 {
        0
    } else if value.abs() >= 10.0 {
        1
    } else if value.abs() >= 1.0 {
        2
    } else {
        3
    };
    let text = format!("{value:.digits$}");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, whole) = whole
        .strip_prefix('-')
        .map_or(("", whole), |rest| ("-", rest));
    let mut grouped = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    let fraction = if fraction.is_empty() {
        String::new()
    } else {
        format!(".{fraction}")
    };
    format!("{sign}{grouped}{fraction} {unit}")
}

fn slug(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').to_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

// ------------------------------------------------------------ the plots

const FONT: &str = "font-family=\"DejaVu Sans, Arial, sans-serif\" font-size=\"12\"";
const COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// One horizontal bar per figure that has a peer, on a log scale centred
/// on 1 (equal to the peer): green to the right, orange to the left.
fn ratio_chart(figures: &[Figure], run: &Run) -> String {
    let rows: Vec<(String, f64)> = figures
        .iter()
        .filter_map(|f| Some((format!("{} — {}", f.area, f.measure), f.ratio()?)))
        .collect();
    // Room for the longest label at about 6.6 px a character of 12 px text.
    let longest = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(10);
    let (label_width, plot_width, row_height) = (longest as f64 * 6.6 + 20.0, 420.0, 20.0);
    let height = 70.0 + row_height * rows.len().max(1) as f64 + 30.0;
    let width = label_width + plot_width + 80.0;
    let span = rows
        .iter()
        .map(|(_, r)| r.log2().abs())
        .fold(1.0_f64, f64::max)
        .ceil();
    let x_of = |ratio: f64| label_width + plot_width / 2.0 * (1.0 + ratio.log2() / span);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" {FONT}>"
    );
    let _ = writeln!(
        svg,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">fogbank ÷ peer, same run (above 1: fogbank ahead)</text>\
         <text x=\"10\" y=\"38\" fill=\"#555\">{}</text>",
        escape(&run.describe())
    );
    let top = 55.0;
    let bottom = top + row_height * rows.len() as f64;
    // Every power of two has a line; labels thin out on a wide span.
    let label_every = if span > 5.0 { 2 } else { 1 };
    for step in -(span as i32)..=(span as i32) {
        let ratio = 2f64.powi(step);
        let x = x_of(ratio);
        let label = if step >= 0 {
            format!("{}", 2u64.pow(step as u32))
        } else {
            format!("1/{}", 2u64.pow((-step) as u32))
        };
        let label = if step % label_every == 0 {
            label
        } else {
            String::new()
        };
        let stroke = if step == 0 { "#000" } else { "#ddd" };
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"{stroke}\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{label}</text>",
            bottom + 15.0
        );
    }
    for (i, (label, ratio)) in rows.iter().enumerate() {
        let y = top + row_height * i as f64;
        let (one, end) = (x_of(1.0), x_of(*ratio));
        let (x, w) = (one.min(end), (end - one).abs().max(1.0));
        let fill = if *ratio >= 1.0 { "#2ca02c" } else { "#ff7f0e" };
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{fill}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{ratio:.2}</text>",
            label_width - 8.0,
            y + 14.0,
            escape(label),
            y + 3.0,
            row_height - 6.0,
            x_of(*ratio).max(one) + 4.0,
            y + 14.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Several series on shared axes, y on a log scale. A "quantile" x axis
/// spreads the nines (p50, p90, p99, p99.9 equally apart).
fn line_chart(title: &str, series: &[&Series]) -> String {
    let (left, top, width, height) = (70.0, 40.0, 560.0, 300.0);
    let x_scale = series.first().map_or("linear", |s| s.x_scale.as_str());
    let x_axis = series.first().map_or("", |s| s.x.as_str());
    let y_axis = series.first().map_or("", |s| s.y.as_str());
    let transform_x = |x: f64| match x_scale {
        "quantile" => -(1.0 - x.min(0.9999)).log10(),
        "log" => x.max(f64::MIN_POSITIVE).log10(),
        _ => x,
    };
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(_, y)| *y > 0.0)
        .collect();
    let bound = |f: &dyn Fn(&(f64, f64)) -> f64, pick: fn(f64, f64) -> f64, start: f64| {
        points.iter().map(f).fold(start, pick)
    };
    let (x_min, x_max) = (
        bound(&|p| transform_x(p.0), f64::min, f64::INFINITY),
        bound(&|p| transform_x(p.0), f64::max, f64::NEG_INFINITY),
    );
    let (y_min, y_max) = (
        bound(&|p| p.1.log10(), f64::min, f64::INFINITY).floor(),
        bound(&|p| p.1.log10(), f64::max, f64::NEG_INFINITY).ceil(),
    );
    let (y_min, y_max) = if y_max > y_min {
        (y_min, y_max)
    } else {
        (y_min, y_min + 1.0)
    };
    let (x_min, x_max) = if x_max > x_min {
        (x_min, x_max)
    } else {
        (x_min - 1.0, x_min + 1.0)
    };
    let px = |x: f64| left + (transform_x(x) - x_min) / (x_max - x_min) * width;
    let py = |y: f64| top + height - (y.log10() - y_min) / (y_max - y_min) * height;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" {FONT}>\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        left + width
            + 40.0
            + 7.0
                * series
                    .iter()
                    .map(|s| s.name.chars().count())
                    .max()
                    .unwrap_or(10) as f64,
        top + height + 50.0,
        escape(title)
    );
    for decade in (y_min as i32)..=(y_max as i32) {
        let y = top + height - (decade as f64 - y_min) / (y_max - y_min) * height;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{}</text>",
            left + width,
            left - 6.0,
            y + 4.0,
            10f64.powi(decade)
        );
    }
    let mut ticks: Vec<f64> = points.iter().map(|p| p.0).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for x in ticks {
        let label = if x_scale == "quantile" && x >= 1.0 {
            "max".to_owned()
        } else if x_scale == "quantile" {
            format!("p{}", (x * 1000.0).round() / 10.0)
        } else {
            format!("{x}")
        };
        let _ = writeln!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#eee\"/>\
             <text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\" fill=\"#555\">{label}</text>",
            px(x),
            top + height,
            top + height + 15.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">{}</text>",
        left + width / 2.0,
        top + height + 38.0,
        escape(x_axis),
        top + height / 2.0,
        top + height / 2.0,
        escape(y_axis)
    );
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = s
            .points
            .iter()
            .filter(|(_, y)| *y > 0.0)
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for point in &path {
            let (x, y) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                svg,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{colour}\"/>"
            );
        }
        let legend_y = top + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            left + width + 15.0,
            legend_y - 10.0,
            left + width + 32.0,
            legend_y,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_is_above_one_when_fogbank_is_ahead_either_way() {
        let figure = |better: &str, value, peer| Figure {
            bench: String::new(),
            area: String::new(),
            measure: String::new(),
            value: Some(value),
            unit: String::new(),
            better: better.to_owned(),
            peer: Some("p".to_owned()),
            peer_value: Some(peer),
        };
        assert_eq!(figure("higher", 200.0, 100.0).ratio(), Some(2.0));
        assert_eq!(figure("lower", 1.0, 2.0).ratio(), Some(2.0));
        assert_eq!(figure("lower", 0.0, 2.0).ratio(), None);
    }

    #[test]
    fn the_generated_section_replaces_only_itself() {
        let first = splice(
            "# B\n\nintro\n\n## Old\n\ntext\n",
            &format!("{BEGIN}\none\n{END}\n"),
        );
        assert_eq!(
            first,
            format!("# B\n\nintro\n\n{BEGIN}\none\n{END}\n\n## Old\n\ntext\n")
        );
        let second = splice(&first, &format!("{BEGIN}\ntwo\n{END}\n"));
        assert_eq!(second, first.replace("one", "two"));
    }

    #[test]
    fn amounts_are_grouped_and_rounded() {
        assert_eq!(amount(191300.4, "readings/s"), "191 300 readings/s");
        assert_eq!(amount(0.2834, "ms"), "0.283 ms");
        assert_eq!(amount(34.56, "MiB"), "34.6 MiB");
        assert_eq!(
            slug("Latency, one reading A → B"),
            "latency-one-reading-a-b"
        );
    }
}
