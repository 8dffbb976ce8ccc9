//! The runner's whole path in a tiny configuration: every runtime's floor
//! and cluster with one and two clients, the core, the table, the JSON and
//! the chart. It checks that the pieces work together, not how fast they
//! are: no assertion here is about speed.

use std::time::Duration;

use vr_bench::report::{table, write_chart, write_json, Kind, Report};
use vr_bench::runner::{run, Plan};
use vr_bench::runtime::Runtime;

#[test]
fn runner_measures_every_runtime_and_writes_its_files() {
    let plan = Plan {
        runtimes: Runtime::ALL.to_vec(),
        clients: vec![1, 2],
        op_sizes: vec![16],
        warmup: Duration::from_millis(20),
        measure: Duration::from_millis(150),
        rate_per_sec: None,
        batch_ops_max: vec![1, 64],
        batch_delay_ns: 0,
        core_clients: vec![1, 4],
        core_batch_ops_max: vec![1, 64],
        core_read_percents: vec![100],
        core_lease_clients: 4,
        core_measure: Duration::from_millis(30),
        floor: true,
    };
    let report = run(&plan, true).expect("the runner runs");
    assert_eq!(report.rows.len(), plan.steps());
    for row in &report.rows {
        assert!(row.ops > 0, "no operation completed: {row:?}");
        assert_eq!(row.errors, 0, "operations failed: {row:?}");
        assert!(row.p50_us > 0.0 && row.p50_us <= row.p99_us, "{row:?}");
        if row.kind == Kind::Vr {
            assert!(
                row.latency_vs_floor.is_some(),
                "a VR row without its floor: {row:?}"
            );
            assert_eq!(row.views, vec![0, 0, 0], "no view change expected: {row:?}");
        }
    }
    for runtime in Runtime::ALL {
        for (kind, per_client_count) in [(Kind::Vr, 2), (Kind::Floor, 1)] {
            assert_eq!(
                report
                    .rows
                    .iter()
                    .filter(|r| r.runtime == runtime.name() && r.kind == kind)
                    .count(),
                2 * per_client_count,
                "{runtime} {kind:?}: a floor per client count, a VR row per batch_ops_max"
            );
        }
    }
    let leased = report
        .rows
        .iter()
        .find(|r| r.kind == Kind::Core && r.leases)
        .expect("a leased-read core row");
    assert_eq!(
        leased.prepare_batch_mean, None,
        "reads under a lease need no Prepare"
    );
    assert!(table(&report.rows).lines().count() > report.rows.len());

    let dir = std::env::temp_dir().join(format!("vr-bench-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, chart) = (dir.join("results.json"), dir.join("chart.svg"));
    write_json(&report, &json).unwrap();
    write_chart(&report.rows, &chart).unwrap();
    let back: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(back.rows.len(), report.rows.len());
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("glommio replicated write"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn open_loop_rate_mode_completes() {
    let plan = Plan {
        runtimes: vec![Runtime::Tokio],
        clients: vec![4],
        op_sizes: vec![16],
        warmup: Duration::ZERO,
        measure: Duration::from_millis(200),
        rate_per_sec: Some(2000.0),
        batch_ops_max: vec![64],
        batch_delay_ns: 0,
        core_clients: vec![],
        core_batch_ops_max: vec![],
        core_read_percents: vec![],
        core_lease_clients: 0,
        core_measure: Duration::ZERO,
        floor: false,
    };
    let report = run(&plan, true).expect("the runner runs");
    let row = &report.rows[0];
    assert_eq!(row.errors, 0);
    // 2000/s for 0.2 s is 400 scheduled; allow for start-up and scheduling.
    assert!(
        (100..=500).contains(&row.ops),
        "an open loop sends at its rate, not as fast as it can: {} ops",
        row.ops
    );
}
