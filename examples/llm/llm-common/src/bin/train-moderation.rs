//! Trains the moderation model of `llm-moderation` and writes its
//! weights: reads `examples/llm/llm-moderation/data/train.tsv`, writes
//! `examples/llm/llm-moderation/src/weights.rs`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../llm-moderation");
    let data = match std::fs::read_to_string(dir.join("data/train.tsv")) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("train.tsv: {e}");
            return ExitCode::FAILURE;
        }
    };
    let counts = match llm_common::classifier::train(&data) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("train.tsv: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = dir.join("src/weights.rs");
    if let Err(e) = std::fs::write(&out, llm_common::classifier::render(&counts)) {
        eprintln!("{}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!(
        "wrote {} ({} ok / {} flagged documents, {} words)",
        out.display(),
        counts.docs[0],
        counts.docs[1],
        counts.vocab.len()
    );
    ExitCode::SUCCESS
}
