//! The embedded embedding model (`COACH_EMBEDDING_PROVIDER=local`) against the reference
//! implementation: vectors for the sentences in `tests/fixtures/minilm_reference.json`, made
//! once with sentence-transformers by `scripts/reference_vectors.py`, must be matched to a
//! cosine similarity above 0.999, however the texts are batched.

use std::sync::Arc;

use coach::{
    config::{ConfigError, StartupError},
    embeddings::{local::LocalModel, EmbedError, Embedder},
    http::outbound_client,
    retry::Retries,
    secrets::Secrets,
};
use coach_testkit::stack::{model_dir, TestStack};
use serde_json::Value;

struct Case {
    text: String,
    vector: Vec<f32>,
}

fn reference() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/minilm_reference.json");
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
    let model = LocalModel::load(&model_dir()).expect("scripts/model.sh installs the model");
    assert_eq!(model.dims(), 384);

    let alone: Vec<Vec<f32>> = cases.iter().map(|c| model.embed(&[c.text.as_str()]).unwrap().remove(0)).collect();
    assert_matches(&cases, &alone);

    // One call: texts of very different lengths share padded batches, sorted by length,
    // and must come back in the caller's order.
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    assert_matches(&cases, &model.embed(&texts).unwrap());

    // Padding must not change a vector: the short text beside the 256-token one.
    let longest = cases.iter().max_by_key(|c| c.text.len()).unwrap();
    let pair = model.embed(&[cases[0].text.as_str(), longest.text.as_str()]).unwrap();
    assert!(cosine(&pair[0], &alone[0]) > 0.9999);

    assert!(model.embed(&[]).unwrap().is_empty());
}

/// An embedder as the chat and ingest functions build it, over a stack with `vars`.
async fn build_embedder(vars: &[(&str, &str)]) -> Result<Embedder, ConfigError> {
    let stack = TestStack::with_env(vars).await;
    stack.build(&stack.aws, |env, aws| -> Result<_, StartupError> {
        let secrets = Secrets::from_env(env, Arc::new(aws.secrets_manager()), &aws.config.secret_id)?;
        Ok(Embedder::from_env(env, Retries::from_env(env)?, outbound_client()?, secrets))
    })
}

#[tokio::test]
async fn local_is_the_default_provider_and_loads_its_model_on_the_first_embedding() {
    // The stack's environment names only the folder (COACH_EMBEDDING_MODEL_DIR).
    let embedder = build_embedder(&[]).await.unwrap();
    assert!(embedder.enabled());
    // Named after the folder: vectors of different models never meet in one ranking.
    assert_eq!(embedder.model(), "all-minilm-l6-v2");
    let cases = reference();
    let texts: Vec<String> = cases.iter().map(|c| c.text.clone()).collect();
    assert_matches(&cases, &embedder.embed(&texts).await.unwrap());
}

#[tokio::test]
async fn a_missing_or_broken_model_is_reported_not_guessed() {
    let error = build_embedder(&[("COACH_EMBEDDING_MODEL_DIR", "/nonexistent/model")]).await.err().expect("an error");
    assert_eq!(error.var, "COACH_EMBEDDING_MODEL_DIR");
    assert!(error.reason.contains("model.safetensors"), "{}", error.reason);
    assert!(error.reason.contains("scripts/model.sh"), "{}", error.reason);

    // The files are there but the weights are not a safetensors file: the first embedding
    // fails as unavailable (a deployment fault, retried), and says nothing of the file.
    let broken = tempdir();
    for file in coach::embeddings::local::MODEL_FILES {
        let target = broken.join(file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(model_dir().join(file), &target).unwrap();
    }
    std::fs::write(broken.join("model.safetensors"), b"not weights").unwrap();
    let embedder = build_embedder(&[("COACH_EMBEDDING_MODEL_DIR", broken.to_str().unwrap())]).await.unwrap();
    let error = embedder.embed(&["hello".to_owned()]).await.unwrap_err();
    assert_eq!(error, EmbedError::Unavailable("the embedding model could not be loaded".into()));
    std::fs::remove_dir_all(&broken).unwrap();

    // `none` keeps lexical-only retrieval and needs no model.
    let none = build_embedder(&[("COACH_EMBEDDING_PROVIDER", "none"), ("COACH_EMBEDDING_MODEL_DIR", "/nonexistent")])
        .await
        .unwrap();
    assert!(!none.enabled());
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("coach-model-{}", ulid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ulid_like() -> String {
    format!("{}-{}", std::process::id(), fastrand::u64(..))
}
