//! Benchmark (not a test): how fast answers become audio.
//!
//!     cargo build -p sandbox --bin sandbox && cargo bench -p router --bench voice
//!
//! 1. Real-time factor of each local engine (synthesis wall time ÷ audio
//!    duration; below 1 is faster than speech) on three texts, 5 runs each, with
//!    the engine's WAV step alone (`espeak-ng`, `python -m piper`) beside it.
//! 2. Live turns through the real router, a real sandbox under bubblewrap and the
//!    real CLI against the fake model (which streams the whole answer at once):
//!    time from the text delta that ends the first sentence reaching the browser
//!    to that sentence's `voice` event, and from the answer's last text delta to
//!    the last `voice` event, against the baseline of the same turn without
//!    voice (message → `done`), 10 turns each. Needs root (the sandbox runs as
//!    a uid of its own), `scripts/setup.sh` done, and `DATABASE_URL`'s server
//!    (it (re)creates `jarvis_bench_voice`).
//!
//! Measured 2026-11-25 on the 2-core dev machine, `--profile dev`, under load from
//! another build (full tables in README's Benchmarks section): RTF espeak 0.018–0.022,
//! piper 0.11–0.40; first sentence's end → its voice event p50 68.6 ms (0.99× the
//! plain turn's message → done of 69.6 ms); last text → last voice event p50
//! 143.7 ms (2.07×).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use router::voice::{Engine, audio, espeak::Espeak, piper::Piper};
use sandbox::testing::{FakeApi, Reply};
use serde_json::{Value, json};
use support::{BenchDb, live::Jarvis, ms, pct};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

mod support;

const RUNS: usize = 5;
const TURNS: usize = 10;
const DB: &str = "jarvis_bench_voice";

const TEXTS: [(&str, &str); 3] = [
    (
        "sentence (8 words)",
        "Hello, this is Jarvis with your answer.",
    ),
    (
        "paragraph (45 words)",
        "The report is ready. I read the three files you uploaded, compared the totals \
         for each quarter, and found that spending rose by twelve percent while income \
         stayed flat. The largest change is in travel. I saved a summary as a document.",
    ),
    (
        "long (120 words)",
        "Here is the plan for the week. On Monday we review the open issues and decide \
         which ones matter most for the release. On Tuesday and Wednesday we fix the \
         bugs that users reported, starting with the crash on start-up and the slow \
         search. On Thursday we write the missing tests and update the documentation, \
         so that new people can set the project up on their own. On Friday we cut the \
         release candidate, run the full test suite on a fresh machine, and ask three \
         users to try it. If they find nothing serious, we publish it on Monday. If \
         they do, we fix it first and move the date. Either way, we write down what we \
         learned, so the next release goes more smoothly than this one did.",
    ),
];

/// A local engine: its WAV step alone, and the whole engine.
enum Local {
    Espeak(Espeak),
    Piper(Piper),
}

impl Local {
    async fn wav(&self, text: &str) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Self::Espeak(e) => e.wav(text).await?,
            Self::Piper(p) => p.wav(text).await?,
        })
    }

    fn engine(&self) -> &dyn Engine {
        match self {
            Self::Espeak(e) => e,
            Self::Piper(p) => p,
        }
    }
}

async fn real_time_factors() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("JARVIS_PIPER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".tools/piper/bin/python"));
    let model = std::env::var_os("JARVIS_PIPER_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".tools/piper/voices/en_US-joe-medium.onnx"));
    anyhow::ensure!(
        python.is_file() && model.is_file(),
        "Piper is missing: run scripts/setup.sh (or set JARVIS_PIPER_BIN and JARVIS_PIPER_MODEL)"
    );
    let engines = [
        ("espeak", Local::Espeak(Espeak::new("en-us".into()))),
        ("piper", Local::Piper(Piper::new(python, model))),
    ];
    println!("\nReal-time factor (synthesis wall time ÷ audio duration), {RUNS} runs, median\n");
    println!("| engine | text | audio | WAV step alone | whole engine (+ opusenc) | RTF |");
    println!("|---|---|---|---|---|---|");
    for (engine_name, engine) in &engines {
        for (name, text) in TEXTS {
            let (mut wav_times, mut full_times) = (Vec::new(), Vec::new());
            let mut audio_ms = 0;
            for _ in 0..RUNS {
                let started = Instant::now();
                let wav = engine.wav(text).await?;
                wav_times.push(started.elapsed());
                audio_ms = audio::wav_duration_ms(&wav).context("wav")?;
                let started = Instant::now();
                let speech = engine.engine().synthesize(text).await?;
                full_times.push(started.elapsed());
                anyhow::ensure!(speech.bytes.starts_with(b"OggS"), "not Ogg");
            }
            wav_times.sort();
            full_times.sort();
            let (wav, full) = (ms(pct(&wav_times, 0.5)), ms(pct(&full_times, 0.5)));
            println!(
                "| {engine_name} | {name} | {:.2} s | {wav:.1} ms | {full:.1} ms | {:.3} |",
                audio_ms as f64 / 1000.0,
                full / audio_ms as f64,
            );
        }
    }
    Ok(())
}

struct Browser {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Browser {
    async fn open(url: &str, origin: &str, token: &str) -> anyhow::Result<Self> {
        let mut request = url.into_client_request()?;
        let headers = request.headers_mut();
        headers.insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("jarvis, bearer.{token}"))?,
        );
        headers.insert("origin", HeaderValue::from_str(origin)?);
        let (ws, _) = tokio_tungstenite::connect_async(request).await?;
        let mut browser = Self { ws };
        browser
            .until(|f| f["type"] == "status" && f["state"] == "ready")
            .await?;
        Ok(browser)
    }

    /// Frames with their arrival times until `stop` accepts one.
    async fn until(
        &mut self,
        stop: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Vec<(Instant, Value)>> {
        let mut frames = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(120), self.ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let frame: Value = serde_json::from_str(&t)?;
                    let last = stop(&frame);
                    if frame["type"] == "error" {
                        bail!("{frame}");
                    }
                    frames.push((Instant::now(), frame));
                    if last {
                        return Ok(frames);
                    }
                }
                Ok(Some(Ok(_))) => {}
                other => bail!("no frame: {other:?}"),
            }
        }
    }
}

/// One turn; `(message → done, first sentence end → its voice, last text → last voice)`.
async fn turn(
    browser: &mut Browser,
    api: &FakeApi,
    conversation: &mut Option<String>,
    voice: bool,
) -> anyhow::Result<(Duration, Option<Duration>, Option<Duration>)> {
    api.push(Reply::text(&[
        "Here is your answer",
        ". The report is ready and saved as a document",
        ". Ask me if you want the details.",
    ]));
    let mut frame = json!({"type": "message", "content": "report?", "voice": voice});
    if let Some(c) = conversation {
        frame["conversation_id"] = json!(c);
    }
    let sent = Instant::now();
    browser.ws.send(Message::text(frame.to_string())).await?;
    let frames = browser.until(|f| f["type"] == "done").await?;
    let done = frames.last().context("done")?.0 - sent;
    *conversation = frames
        .iter()
        .find_map(|(_, f)| f["conversation_id"].as_str().map(str::to_string));
    if !voice {
        return Ok((done, None, None));
    }
    let texts: Vec<Instant> = frames
        .iter()
        .filter(|(_, f)| f["type"] == "text")
        .map(|(t, _)| *t)
        .collect();
    let voices: Vec<&(Instant, Value)> = frames
        .iter()
        .filter(|(_, f)| f["type"] == "voice")
        .collect();
    anyhow::ensure!(voices.len() == 3, "three spoken sentences: {frames:?}");
    anyhow::ensure!(
        voices.iter().all(|(_, v)| v.get("error").is_none()),
        "{voices:?}"
    );
    // The first sentence ends with the second delta's leading period.
    let first_end = *texts.get(1).context("second delta")?;
    let last_text = *texts.last().context("text")?;
    Ok((
        done,
        Some(voices[0].0.saturating_duration_since(first_end)),
        Some(voices[2].0.saturating_duration_since(last_text)),
    ))
}

async fn live_turns() -> anyhow::Result<()> {
    let bench_db = BenchDb::fresh(DB, 10).await?;
    let api = FakeApi::start().await?;
    let dir = tempfile::tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let jarvis = Jarvis::start(&bench_db.url, dir.path(), &api, 1_914_000_000, |config| {
        // The free plan's 20 model requests a minute would throttle the run.
        config.plans = Some(r#"{"free": {"requests_per_minute": 100000}}"#.into());
    })
    .await?;
    let (id, token) = jarvis.user("voice@example.com").await?;
    let mut browser = Browser::open(&jarvis.url, &jarvis.origin, &token).await?;

    let mut conversation = None;
    // Warm up: the CLI starts on the first turn.
    turn(&mut browser, &api, &mut conversation, false).await?;
    turn(&mut browser, &api, &mut conversation, true).await?;
    let (mut plain, mut spoken, mut first, mut last) = (vec![], vec![], vec![], vec![]);
    for _ in 0..TURNS {
        plain.push(turn(&mut browser, &api, &mut conversation, false).await?.0);
        let (done, f, l) = turn(&mut browser, &api, &mut conversation, true).await?;
        spoken.push(done);
        first.extend(f);
        last.extend(l);
    }
    jarvis.registry.sleep(&jarvis.registry.hub(id)).await?;
    for v in [&mut plain, &mut spoken, &mut first, &mut last] {
        v.sort();
    }
    let base = ms(pct(&plain, 0.5));
    println!("\n{TURNS} live turns each (3-sentence answer), median and p90\n");
    println!("| measure | p50 | p90 | p50 ÷ plain turn |");
    println!("|---|---|---|---|");
    for (name, t) in [
        ("plain turn, message → done (baseline)", &plain),
        ("voice turn, message → done", &spoken),
        ("first sentence's end → its voice event", &first),
        ("answer's last text → last voice event", &last),
    ] {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.2} |",
            ms(pct(t, 0.5)),
            ms(pct(t, 0.9)),
            ms(pct(t, 0.5)) / base
        );
    }
    drop(browser);
    jarvis.stop().await;
    bench_db.drop().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    real_time_factors().await?;
    live_turns().await
}
