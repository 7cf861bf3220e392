//! Every worked example in `docs/smanage.md` is a packet of the type its
//! heading names, and encodes back to the same bytes: the page and the
//! codec cannot drift apart.

use fogbank_smanage::{Body, PacketType, decode};

fn examples() -> Vec<(String, Vec<u8>)> {
    // Read at run time: a path baked in names the checkout the binary was
    // built in, which a shared target dir outlives.
    let package = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let path = format!("{package}/../../docs/smanage.md");
    let page = std::fs::read_to_string(path).expect("docs/smanage.md");
    let mut examples = Vec::new();
    let mut heading = String::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        if let Some(title) = line.strip_prefix("### ") {
            heading = title.to_owned();
        } else if line == "```hex" {
            let bytes = lines
                .by_ref()
                .take_while(|l| *l != "```")
                .flat_map(|l| l.split_whitespace())
                .map(|b| u8::from_str_radix(b, 16).expect("a hex byte"))
                .collect();
            examples.push((heading.clone(), bytes));
        }
    }
    examples
}

#[test]
fn every_example_is_the_packet_its_heading_names() {
    let examples = examples();
    assert_eq!(
        examples.len(),
        19,
        "one example per packet type and report kind"
    );
    for (heading, bytes) in examples {
        let packet = decode(&bytes).unwrap_or_else(|e| panic!("{heading}: {e}"));
        let name = match &packet.body {
            Body::Report(report) => report.name(),
            body => PacketType::name(body.packet_type()),
        };
        let expected = heading.split(' ').next().unwrap_or_default();
        assert_eq!(name, expected, "{heading}");
        assert_eq!(packet.encode().unwrap(), bytes, "{heading}");
    }
}
