//! The single-stage benchmarks: embedding against candle's stock BERT,
//! generation, constrained decoding, self-consistency samples, search and
//! filtered search, each beside its baseline.

use std::path::PathBuf;

use anyhow::Context;
use lore::Engine;

use super::super::{Global, config, print_json};

fn load_generator(
    global: &Global,
    generator: Option<String>,
) -> anyhow::Result<lore::generate::gguf::GgufGenerator> {
    Ok(generator_and_config(global, generator)?.0)
}

/// The generator `generator` names (else the configured one), loaded, and
/// the configuration it was loaded with.
fn generator_and_config(
    global: &Global,
    generator: Option<String>,
) -> anyhow::Result<(lore::generate::gguf::GgufGenerator, lore::config::Config)> {
    let config = config(global, |c| {
        if generator.is_some() {
            c.generator.model = generator.clone();
        }
    })?;
    let model = lore::generate::gguf::GgufGenerator::load_with(
        &config.generator_path(),
        lore::generate::gguf::Options::of(&config.generator),
    )?;
    Ok((model, config))
}

/// The handbook's on-call pages, as benchmark text.
fn bench_text() -> anyhow::Result<String> {
    let mut text = String::new();
    for entry in std::fs::read_dir("corpora/handbook/docs/oncall")
        .context("while reading corpora/handbook")?
    {
        text.push_str(&std::fs::read_to_string(entry?.path()).unwrap_or_default());
    }
    Ok(text.repeat(4))
}

pub fn constrained(
    global: &Global,
    generator: Option<String>,
    runs: usize,
    temperature: f64,
    json: bool,
) -> anyhow::Result<()> {
    let model = load_generator(global, generator)?;
    let result = lore::bench::constrained(&model, runs, temperature)?;
    if json {
        print_json(&result)?;
    } else {
        println!("{}", result.model);
        println!(
            "valid    {}/{} at temperature {}",
            result.valid, result.runs, result.temperature
        );
        for why in &result.invalid {
            println!("  invalid: {why}");
        }
        println!(
            "decode   {:.1} tokens/s constrained, {:.1} free: {:.2}×",
            result.constrained_tokens_per_s, result.free_tokens_per_s, result.ratio
        );
    }
    if result.valid < result.runs {
        anyhow::bail!(
            "{} outputs did not match the schema",
            result.runs - result.valid
        );
    }
    Ok(())
}

pub fn samples(
    global: &Global,
    generator: Option<String>,
    prompt_tokens: usize,
    samples: usize,
    json: bool,
) -> anyhow::Result<()> {
    let model = load_generator(global, generator)?;
    let result = lore::bench::samples(&model, &bench_text()?, prompt_tokens, samples.max(1))?;
    if json {
        return print_json(&result);
    }
    println!("{} · {} prompt tokens", result.model, result.prompt_tokens);
    println!(
        "one answer   prompt {:>7.0} ms  decode {:>7.0} ms ({} tokens)",
        result.one_prompt_ms, result.one_decode_ms, result.one_tokens
    );
    println!(
        "{} samples    prompt {:>7.0} ms  decode {:>7.0} ms ({} tokens)",
        result.samples, result.many_prompt_ms, result.many_decode_ms, result.many_tokens
    );
    println!(
        "ratio        prompt {:.2}×  decode {:.2}×",
        result.prompt_ratio, result.decode_ratio
    );
    Ok(())
}

pub fn generate(
    global: &Global,
    generator: Option<String>,
    prompt_tokens: usize,
    gen_tokens: usize,
    llama_cpp: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let (model, config) = generator_and_config(global, generator)?;
    let text = bench_text()?;
    let result = lore::bench::generate(&model, &text, prompt_tokens, gen_tokens)?;
    let reference = match &llama_cpp {
        Some(python) => {
            let threads = config.threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let path = config.generator_path();
            Some(lore::bench::llama_cpp(
                python,
                &path,
                &text,
                result.prompt_tokens,
                gen_tokens,
                threads,
            )?)
        }
        None => None,
    };
    if json {
        return print_json(&serde_json::json!({ "lore": result, "llama_cpp": reference }));
    }
    println!("{}", result.model);
    println!(
        "prompt   {:>5} tokens {:>8.1} tokens/s",
        result.prompt_tokens, result.prompt_tokens_per_s
    );
    println!(
        "generate {:>5} tokens {:>8.1} tokens/s",
        result.gen_tokens, result.gen_tokens_per_s
    );
    println!(
        "time to first token {:.0} ms cold, {:.0} ms for the same prompt again, \
         {:.0} ms for another question after the same text ({} of its tokens cached)",
        result.time_to_first_token_ms,
        result.repeat_ttft_ms,
        result.new_question_ttft_ms,
        result.new_question_reused_tokens
    );
    println!(
        "three sources: {:.0} ms new, {:.0} ms in another order before another question \
         ({} of its tokens cached)",
        result.sources_ttft_ms, result.sources_moved_ttft_ms, result.sources_moved_reused_tokens
    );
    if let Some(r) = reference {
        println!(
            "llama.cpp, same model and threads: prompt {} tokens {:.1} tokens/s (lore {:.2}x), \
             generate {:.1} tokens/s (lore {:.2}x), first token {:.0} ms",
            r.prompt_tokens,
            r.prompt_tokens_per_s,
            result.prompt_tokens_per_s / r.prompt_tokens_per_s,
            r.gen_tokens_per_s,
            result.gen_tokens_per_s / r.gen_tokens_per_s,
            r.time_to_first_token_ms
        );
    }
    Ok(())
}

pub fn search(
    global: &Global,
    queries: &std::path::Path,
    limit: usize,
    scale: usize,
    json: bool,
) -> anyhow::Result<()> {
    let engine = Engine::open_existing(config(global, |_| {})?)?;
    let queries = lore::bench::read_queries(queries, limit)?;
    let result = lore::bench::search(&engine, &queries, scale)?;
    if json {
        return print_json(&result);
    }
    let l = |name: &str, l: &lore::bench::Latency| {
        println!(
            "{name:<28} p50 {:>8.3} ms  p99 {:>8.3} ms  {:>9.1} queries/s",
            l.p50_ms, l.p99_ms, l.qps
        )
    };
    println!("{} queries", result.queries);
    l("search (hybrid, warm)", &result.search);
    let t = &result.stages;
    println!(
        "  mean per stage: embed {:.3} ms, dense {:.3} ms, bm25 {:.3} ms, total {:.3} ms",
        t.embed_ms, t.dense_ms, t.bm25_ms, t.total_ms
    );
    for (name, g) in std::iter::once(("index", &result.graph))
        .chain(result.scaled.as_ref().map(|g| ("synthetic", g)))
    {
        println!(
            "{name} graph: {} vectors, recall@10 {:.4} vs exact, {:.1}x faster (built in {:.1}s)",
            g.vectors, g.recall_at_10, g.speedup, g.build_seconds
        );
        l("  hnsw top-10", &g.hnsw);
        l("  exact top-10 (baseline)", &g.exact);
    }
    Ok(())
}

pub fn filter(
    global: &Global,
    queries: &std::path::Path,
    limit: usize,
    chunks: usize,
    json: bool,
) -> anyhow::Result<()> {
    let engine = Engine::open_existing(config(global, |_| {})?)?;
    let queries = lore::bench::read_queries(queries, limit)?;
    let result = lore::bench::filter(&engine, chunks, &queries)?;
    if json {
        return print_json(&result);
    }
    println!(
        "{} chunks in {} documents from {} real chunks, built in {:.1}s; {} queries, hybrid, k = 10",
        result.chunks, result.documents, result.base_chunks, result.build_seconds, result.queries
    );
    for case in &result.cases {
        let l = &case.latency;
        let t = &case.stages;
        println!(
            "{:<28} p50 {:>8.3} ms  p99 {:>8.3} ms  {:>5.2}x unfiltered  {:.1} hits  \
             (mean: filter {:.1}, embed {:.1}, dense {:.1}, bm25 {:.1}, total {:.1} ms)",
            case.name,
            l.p50_ms,
            l.p99_ms,
            case.ratio,
            case.mean_hits,
            t.filter_ms,
            t.embed_ms,
            t.dense_ms,
            t.bm25_ms,
            t.total_ms
        );
    }
    println!(
        "a filtered search right after a write: {:.1} ms (median)",
        result.after_write_ms
    );
    Ok(())
}

pub fn embed(
    global: &Global,
    corpus: &std::path::Path,
    n: usize,
    baseline: bool,
    dump: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let config = config(global, |_| {})?;
    let sizer_model = lore::embed::bert::BertEmbedder::load(
        &config.embedder_dir(),
        config.embedder.max_tokens,
        1,
    )?;
    let chunks = lore::bench::bench_chunks(&config, corpus, n, &sizer_model)?;
    drop(sizer_model);
    if let Some(path) = dump {
        std::fs::write(&path, serde_json::to_vec(&chunks)?)
            .with_context(|| format!("while writing {}", path.display()))?;
    }
    let result = lore::bench::embed(&config, &chunks, baseline)?;
    if json {
        return print_json(&result);
    }
    let line = |t: &lore::bench::Throughput| {
        println!(
            "{:<20} {:>5} chunks {:>7} tokens {:>7.2} s {:>8.2} chunks/s {:>9.1} tokens/s",
            t.backend, t.chunks, t.tokens, t.seconds, t.chunks_per_s, t.tokens_per_s
        )
    };
    println!("mean tokens per chunk: {:.1}", result.mean_tokens);
    line(&result.lore);
    if let Some(exact) = &result.f32 {
        line(exact);
    }
    if let Some(b) = &result.baseline {
        line(b);
    }
    if let Some(ratio) = result.ratio {
        println!("ratio lore/baseline: {ratio:.2}x");
    }
    Ok(())
}
