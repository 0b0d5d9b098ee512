//! The cost of traces and metrics: two servers on one database, one with both off (the
//! default) and one with both on (`--metrics-listen`, and OTLP export of every span to
//! a collector in this process, sampler `always_on`), measured in alternating slices on
//! the empty call (`grpc.health.v1.Health/Check`) and on ReadContext, at 32 clients. The
//! alternation puts the machine's swings on both alike; the figure is the throughput
//! with both on over the throughput with both off (goal: at least 0.95), taken in each
//! pair of slices, of which the median is the verdict (one slow slice moves the whole
//! run's ratio, printed beside it, by several percent on this machine). The collector
//! counts spans without decoding them (see [`crate::collector`]), so that it takes
//! little of the two cores the servers share with it, as a remote collector would.

use std::time::Duration;

use agentry_proto::v1 as pb;

use crate::{
    Cli,
    collector::Collector,
    context::{CHANNELS, context_name, prepare_contexts},
    cpu,
    load::alternate,
    server::{self, channel},
    stats::{median, ratio, report},
};

const CONCURRENCY: usize = 32;
/// Short slices: this machine's speed swings from one second to the next, and the two
/// slices of a pair see the more nearly the same machine the shorter they are.
const SLICE: Duration = Duration::from_millis(250);

#[derive(clap::Args)]
pub struct Args {
    /// `OTEL_TRACES_SAMPLER` of the server with traces on.
    #[arg(long, default_value = "always_on")]
    sampler: String,
    /// `OTEL_TRACES_SAMPLER_ARG` (the ratio of the `*traceidratio` samplers).
    #[arg(long)]
    sampler_arg: Option<String>,
    /// Measure metrics alone: the 'on' server exports no spans.
    #[arg(long)]
    no_traces: bool,
    /// The 'on' server serves no metrics (with `--no-traces`: two identical servers, which
    /// shows how far apart the two measurements land by chance).
    #[arg(long)]
    no_metrics: bool,
    /// Measure only one of the two calls (`empty` or `read`): with the servers under
    /// `valgrind --tool=callgrind`, their instruction counts are then that call's alone.
    #[arg(long, value_parser = ["empty", "read"])]
    only: Option<String>,
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let collector_addr = listener.local_addr()?;
    // Windows as wide as a batch of spans, as collectors tune them (gRPC-Go's grow with
    // the bandwidth): a batch then goes out without waiting for window updates.
    tokio::spawn(
        tonic::transport::Server::builder()
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(8 << 20)
            .add_service(collector.clone())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let root = format!("bench-root-{}", uuid::Uuid::now_v7().simple());
    let off = server::start(&cli.binary, &cli.database_url, &root).await?;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut on_env = Vec::new();
    if !args.no_traces {
        on_env.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        ));
        on_env.push(("OTEL_TRACES_SAMPLER", args.sampler.clone()));
        if let Some(arg) = &args.sampler_arg {
            on_env.push(("OTEL_TRACES_SAMPLER_ARG", arg.clone()));
        }
    }
    let on_args = if args.no_metrics {
        Vec::new()
    } else {
        vec![
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}"),
        ]
    };
    let on = server::start_with(
        &cli.binary,
        &cli.database_url,
        &root,
        Some(&off),
        &on_args,
        &on_env,
    )
    .await?;
    let (key, _) = prepare_contexts(&off).await?;
    let duration = Duration::from_secs(cli.seconds);
    // A call left out by `--only` runs for no time: no call, a report of zeros.
    let for_call = |call: &str| match &args.only {
        Some(only) if only != call => Duration::ZERO,
        _ => duration,
    };
    let traces = if args.no_traces {
        "no traces".to_owned()
    } else {
        format!(
            "OTLP export, sampler {}{}",
            args.sampler,
            args.sampler_arg
                .as_ref()
                .map(|a| format!(" {a}"))
                .unwrap_or_default()
        )
    };
    let metrics = if args.no_metrics {
        "no metrics"
    } else {
        "--metrics-listen"
    };
    println!(
        "observability benchmark: {} s per measurement, {CONCURRENCY} clients, both servers on one Postgres database\n  off: {} (no metrics, no traces)\n  on:  {} ({metrics}, {traces})\n",
        cli.seconds, off.addr, on.addr
    );

    let mut channels = Vec::new();
    for server in [&off, &on] {
        let mut each = Vec::new();
        for _ in 0..CHANNELS {
            each.push(channel(&server.addr).await?);
        }
        channels.push(each);
    }
    // The 'on' server is the meter's server, the 'off' one its peer: each slice's own
    // server's CPU time per call is the layer's cost, steadier than throughput.
    let meter = cpu::Meter::new(on.pid()).with_peer(off.pid());

    let health = |channels: &Vec<tonic::transport::Channel>| {
        let clients: Vec<_> = channels
            .iter()
            .map(|c| tonic_health::pb::health_client::HealthClient::new(c.clone()))
            .collect();
        move |worker: usize, _| {
            let mut client = clients[worker % CHANNELS].clone();
            async move {
                client
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await?;
                Ok(())
            }
        }
    };
    let ([empty_off, empty_on], empty_pairs) = alternate(
        CONCURRENCY,
        for_call("empty"),
        SLICE,
        &meter,
        health(&channels[0]),
        health(&channels[1]),
    )
    .await?;

    let reads = |channels: &Vec<tonic::transport::Channel>| {
        let clients: Vec<_> = channels
            .iter()
            .map(|c| server::contexts(c.clone(), &key))
            .collect();
        move |worker: usize, _| {
            let mut client = clients[worker % CHANNELS].clone();
            async move {
                client
                    .read_context(pb::ReadContextRequest {
                        name: context_name(worker),
                        version: 0,
                    })
                    .await?;
                Ok(())
            }
        }
    };
    let ([reads_off, reads_on], read_pairs) = alternate(
        CONCURRENCY,
        for_call("read"),
        SLICE,
        &meter,
        reads(&channels[0]),
        reads(&channels[1]),
    )
    .await?;

    // Give the batch exporter its schedule delay to send what is left.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let spans = collector.spans();
    let scraped = scrape(metrics_port).await.unwrap_or_default();
    let counted = scraped
        .lines()
        .filter(|l| l.starts_with("agentry_rpc_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>();

    println!("— {CONCURRENCY} concurrent clients");
    report("  empty call, traces + metrics off", &empty_off.0);
    report("  empty call, traces + metrics on", &empty_on.0);
    report("  ReadContext head, traces + metrics off", &reads_off.0);
    report("  ReadContext head, traces + metrics on", &reads_on.0);
    // The verdict: the median of the slice pairs' ratios (see `alternate`); the
    // whole run's ratio beside it.
    for (what, pairs, off, on) in [
        ("empty call", &empty_pairs, &empty_off.0, &empty_on.0),
        ("ReadContext", &read_pairs, &reads_off.0, &reads_on.0),
    ] {
        if off.ops == 0 {
            continue;
        }
        ratio(
            &format!("  {what}: on / off (median of {} pairs)", pairs.len()),
            median(pairs),
            1.0,
            0.95,
        );
        println!(
            "  {what}: on / off over the whole run {:.2}",
            on.per_second / off.per_second
        );
    }
    for (what, (off, off_cpu), (on, on_cpu)) in [
        ("empty call", &empty_off, &empty_on),
        ("ReadContext", &reads_off, &reads_on),
    ] {
        let us = |seconds: f64, calls: usize| seconds / calls.max(1) as f64 * 1e6;
        println!(
            "  {what}: server CPU per call off {:.1} µs, on {:.1} µs; load generator {:.1} / {:.1} µs",
            us(off_cpu.peer, off.ops),
            us(on_cpu.server, on.ops),
            us(off_cpu.bench, off.ops),
            us(on_cpu.bench, on.ops),
        );
    }
    println!(
        "  the 'on' server exported {spans} spans and counted {counted:.0} RPCs in agentry_rpc_requests_total"
    );
    Ok(())
}

/// `/metrics` of the server with metrics on, over a plain HTTP/1.0 exchange.
async fn scrape(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}
