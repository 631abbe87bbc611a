//! The model against the reference implementation: vectors for the sentences in
//! `tests/fixtures/minilm_reference.json`, made once with sentence-transformers by
//! `scripts/reference_vectors.py`, must be matched to a cosine similarity above 0.999, with
//! the fastest kernels this CPU has and with the portable f32 ones, however the texts are
//! batched. Run on x86_64 by `make test` and on arm64 under qemu-user by `scripts/arm64.sh`
//! (the model from `scripts/model.sh`, in `models/`, or `COACH_EMBEDDING_MODEL_DIR`).

use coach_embed::{Kernels, LocalModel};
use serde_json::Value;

/// The model folder: `COACH_EMBEDDING_MODEL_DIR`, else the one `scripts/model.sh` fills.
fn model_dir() -> std::path::PathBuf {
    match std::env::var_os("COACH_EMBEDDING_MODEL_DIR") {
        Some(dir) => dir.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/all-minilm-l6-v2"),
    }
}

struct Case {
    text: String,
    vector: Vec<f32>,
}

fn reference() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/minilm_reference.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fixture["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_owned(),
            vector: c["vector"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect(),
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

fn assert_matches(cases: &[Case], vectors: &[Vec<f32>]) {
    assert_eq!(vectors.len(), cases.len());
    for (case, vector) in cases.iter().zip(vectors) {
        assert_eq!(vector.len(), 384, "{:?}", case.text);
        let similarity = cosine(vector, &case.vector);
        assert!(similarity > 0.999, "cosine {similarity} for {:?}", case.text);
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm} for {:?}", case.text);
    }
}

#[test]
fn vectors_match_the_reference_implementation_one_text_at_a_time_and_batched() {
    let cases = reference();
    assert!(cases.len() >= 5);
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let mut by_kernels = Vec::new();
    let mut seen = Vec::new();
    // The kernels the model picks on this CPU (bf16 with AVX512-BF16), and plain f32; where
    // they are the same (arm64: gemm's f32 products either way), once.
    for kernels in [Kernels::Fastest, Kernels::F32] {
        let model = LocalModel::load_with(&model_dir(), kernels).expect("scripts/model.sh installs the model");
        eprintln!("{kernels:?}: {} kernels", model.kernels());
        if seen.contains(&model.kernels()) {
            continue;
        }
        seen.push(model.kernels());
        assert_eq!(model.dims(), 384);

        let alone: Vec<Vec<f32>> = cases.iter().map(|c| model.embed(&[c.text.as_str()]).unwrap().remove(0)).collect();
        assert_matches(&cases, &alone);

        // One call: texts of very different lengths share padded batches, sorted by length,
        // and must come back in the caller's order.
        assert_matches(&cases, &model.embed(&texts).unwrap());

        // Padding must not change a vector: the short text beside the 256-token one.
        let longest = cases.iter().max_by_key(|c| c.text.len()).unwrap();
        let pair = model.embed(&[cases[0].text.as_str(), longest.text.as_str()]).unwrap();
        assert!(cosine(&pair[0], &alone[0]) > 0.9999);

        assert!(model.embed(&[]).unwrap().is_empty());
        by_kernels.push(alone);
    }
    // The kernels agree more closely with each other than either must with the reference.
    for (fast, exact) in by_kernels[0].iter().zip(by_kernels.last().unwrap()) {
        let similarity = cosine(fast, exact);
        assert!(similarity > 0.9999, "kernels differ: cosine {similarity}");
    }
}
