//! Imports: REST uploads with bad input, and `crm import` killed midway and run again.

use std::io::Write;
use std::time::Duration;

use crm_platform::Role;

use crate::support::{Rest, Suite, token};

async fn import(api: &Rest, query: &str, body: Vec<u8>) -> (u16, Vec<serde_json::Value>) {
    let response = api
        .request(reqwest::Method::POST, &format!("/v1/contacts:import{query}"))
        .body(body)
        .send()
        .await
        .expect("import");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(serde_json::Value::String(l.to_owned())))
        .collect();
    (status, lines)
}

async fn count(api: &Rest, filter: &str) -> usize {
    let text = api
        .request(
            reqwest::Method::GET,
            &format!("/v1/contacts:export?format=csv&filter={filter}"),
        )
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("csv");
    text.lines().count().saturating_sub(1)
}

#[tokio::test]
async fn rest_import_upserts_and_reports_every_row() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "ada", Role::Admin);
    let mut file = b"external_id,given_name,family_name,emails,lifecycle_stage,tags\n".to_vec();
    file.extend_from_slice(b"e-1,Ada,Lovelace,ada@example.com,customer,imp\n");
    file.extend_from_slice(b"e-2,Bo,\"Berg, \"\"Jr\"\"\",bo@example.com,lead,imp\n");
    file.extend_from_slice(b"e-3,Bad,Email,not-an-email,lead,imp\n");
    file.extend_from_slice(b"e-4,Short,Row\n");
    file.extend_from_slice(b"e-5,\xff\xfe,Latin1,l@example.com,lead,imp\n");
    file.extend_from_slice(format!("e-6,Huge,{},h@example.com,lead,imp\n", "x".repeat(10 * 1024 * 1024)).as_bytes());
    file.extend_from_slice(b"e-7,Bad,Stage,s@example.com,boss,imp\n");
    file.extend_from_slice(b"e-8,Quote\"In,Middle,q@example.com,lead,imp\n");

    let (status, lines) = import(&api, "?dryRun=true", file.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(lines.last().expect("summary")["summary"]["created"], "3", "{lines:?}");
    assert_eq!(count(&api, "tag%3Dimp").await, 0, "a dry run writes nothing");

    let (_, lines) = import(&api, "", file.clone()).await;
    let outcome = |line: i64| {
        lines
            .iter()
            .find(|l| l["line"].as_str().and_then(|s| s.parse::<i64>().ok()) == Some(line))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(outcome(2)["outcome"], "ROW_OUTCOME_CREATED");
    assert_eq!(outcome(3)["outcome"], "ROW_OUTCOME_CREATED", "quoted commas and quotes");
    assert_eq!(
        (outcome(4)["outcome"].as_str(), outcome(4)["field"].as_str()),
        (Some("ROW_OUTCOME_REJECTED"), Some("emails[0].address"))
    );
    assert_eq!(outcome(5)["field"], "row", "wrong column count");
    assert_eq!(outcome(6)["reason"], "is not valid UTF-8");
    assert_eq!(outcome(7)["reason"], "is larger than 1 MiB");
    assert_eq!(outcome(8)["field"], "lifecycle_stage");
    assert_eq!(
        outcome(9)["outcome"],
        "ROW_OUTCOME_CREATED",
        "a stray quote inside a field is kept as text"
    );
    let summary = &lines.last().expect("summary")["summary"];
    assert_eq!(
        (summary["created"].as_str(), summary["rejected"].as_str()),
        (Some("3"), Some("5"))
    );
    assert_eq!(count(&api, "tag%3Dimp").await, 3);

    let (_, again) = import(&api, "", file.clone()).await;
    let summary = &again.last().expect("summary")["summary"];
    assert_eq!(
        (summary["created"].as_str(), summary["unchanged"].as_str()),
        (Some("0"), Some("3")),
        "re-running creates nothing"
    );

    let changed = b"external_id,title\ne-1,Countess\n".to_vec();
    let (_, lines) = import(&api, "", changed).await;
    assert_eq!(lines[0]["outcome"], "ROW_OUTCOME_UPDATED");
    let (_, found) = api.get("/v1/contacts:search?query=lovelace").await;
    assert_eq!(found["contacts"][0]["title"], "Countess");
    assert_eq!(
        found["contacts"][0]["familyName"], "Lovelace",
        "columns the file lacks are left alone"
    );

    let by_email = b"Mail,Vorname\nada@example.com,Augusta\n".to_vec();
    let (_, lines) = import(
        &api,
        "?naturalKey=primary_email&mapping=Mail:emails,Vorname:given_name",
        by_email,
    )
    .await;
    assert_eq!(lines[0]["outcome"], "ROW_OUTCOME_UPDATED", "{lines:?}");

    for (query, body) in [
        ("", b"shoe_size\n42\n".to_vec()),
        ("", Vec::new()),
        ("?format=xml", b"given_name\nx\n".to_vec()),
        ("?naturalKey=shoe", b"given_name\nx\n".to_vec()),
        ("?mapping=broken", b"given_name\nx\n".to_vec()),
    ] {
        let (status, lines) = import(&api, query, body).await;
        assert_eq!(status, 400, "{query}: {lines:?}");
    }
    let viewer = Rest::as_user(&suite.rest, "acme", "vic", Role::Viewer);
    assert_eq!(
        import(&viewer, "", b"external_id,given_name\nv-1,V\n".to_vec()).await.0,
        403
    );

    let ndjson =
        b"{\"externalId\":\"n-1\",\"givenName\":\"Nd\",\"tags\":[\"imp\"]}\n{\"externalId\":\"n-2\",\"shoe\":1}\n"
            .to_vec();
    let (_, lines) = import(&api, "?format=ndjson", ndjson).await;
    let by_line = |n: &str| lines.iter().find(|l| l["line"] == n).cloned().unwrap_or_default();
    assert_eq!(
        by_line("1")["outcome"],
        "ROW_OUTCOME_CREATED",
        "results carry their line; they come as rows finish"
    );
    assert_eq!(
        (by_line("2")["outcome"].as_str(), by_line("2")["field"].as_str()),
        (Some("ROW_OUTCOME_REJECTED"), Some("shoe"))
    );
}

/// One unclosed quote makes the rest of a CSV file a single record. The upload costs one
/// rejected row that says which lines it took, not the file's size in memory (the csv
/// crate's reader kept the whole record, 4x the file here, and re-encoded it for minutes).
#[tokio::test]
async fn an_unclosed_quote_in_a_large_upload_is_one_rejected_row_in_bounded_memory() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "ada", Role::Admin);
    let mut file = b"external_id,given_name,family_name,emails\n".to_vec();
    file.extend_from_slice(b"q-1,Ada,Lovelace,ada@example.com\n");
    file.extend_from_slice(b"q-2,\"Bo,Berg,bo@example.com\n");
    let swallowed = 1_500_000;
    for i in 0..swallowed {
        writeln!(file, "q-{i},Given{i},Family{i},g{i}@example.com").expect("row");
    }
    assert!(file.len() > 64 << 20, "{} bytes", file.len());
    let before = suite.process.peak_memory_mib();

    let (status, lines) = import(&api, "", file).await;
    assert_eq!(status, 200);
    let growth = suite.process.peak_memory_mib().saturating_sub(before);
    assert!(growth < 32, "the server's peak memory grew by {growth} MiB");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "ROW_OUTCOME_CREATED");
    assert_eq!(
        (
            lines[1]["line"].as_str(),
            lines[1]["field"].as_str(),
            lines[1]["reason"].as_str()
        ),
        (
            Some("3"),
            Some("row"),
            Some(
                format!(
                    "is larger than 1 MiB (the row runs from line 3 to line {}: is a closing quote missing?)",
                    swallowed + 3
                )
                .as_str()
            )
        )
    );
    let summary = &lines[2]["summary"];
    assert_eq!(
        (summary["created"].as_str(), summary["rejected"].as_str()),
        (Some("1"), Some("1"))
    );

    // An NDJSON line over the limit (48 MiB here) is read past the same way, not held, and
    // the next line is read.
    let mut ndjson = format!(
        "{{\"externalId\":\"n-big\",\"givenName\":\"{}\"}}\n",
        "x".repeat(48 << 20)
    )
    .into_bytes();
    ndjson.extend_from_slice(b"{\"externalId\":\"n-after\",\"givenName\":\"After\"}\n");
    let before = suite.process.peak_memory_mib();
    let (status, lines) = import(&api, "?format=ndjson", ndjson).await;
    assert_eq!(status, 200);
    let by_line = |n: &str| lines.iter().find(|l| l["line"] == n).cloned().unwrap_or_default();
    assert_eq!(
        (by_line("1")["field"].as_str(), by_line("1")["reason"].as_str()),
        (Some("row"), Some("is larger than 1 MiB")),
        "{lines:?}"
    );
    assert_eq!(by_line("2")["outcome"], "ROW_OUTCOME_CREATED", "{lines:?}");
    let growth = suite.process.peak_memory_mib().saturating_sub(before);
    assert!(growth < 32, "the server's peak memory grew by {growth} MiB");
}

#[tokio::test]
async fn an_import_killed_midway_and_run_again_has_every_row_once() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "ada", Role::Admin);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("people.csv");
    let mut file = std::fs::File::create(&path).expect("file");
    writeln!(file, "external_id,given_name,family_name,emails,tags").expect("header");
    let rows = 1500;
    for i in 0..rows {
        writeln!(file, "k-{i},Given{i},Family{i},p{i}@example.com,killed").expect("row");
    }
    drop(file);

    let run = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_crm"));
        command
            .args(["import", path.to_str().expect("path"), "--endpoint", &suite.grpc])
            .env("CRM_TOKEN", token("acme", "ada", Role::Admin))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        command
    };
    let mut first = run().spawn().expect("import");
    let mut waited = Duration::ZERO;
    while count(&api, "tag%3Dkilled").await < 100 {
        assert!(waited < Duration::from_secs(60), "the import made no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    first.kill().expect("kill -9");
    let _ = first.wait();
    let partial = count(&api, "tag%3Dkilled").await;
    assert!(partial < rows, "killed midway ({partial} rows in)");

    let second = run().output().expect("import again");
    assert!(second.status.success());
    let report = String::from_utf8_lossy(&second.stdout);
    assert!(report.contains("0 rejected"), "{report}");
    assert_eq!(
        count(&api, "tag%3Dkilled").await,
        rows,
        "every row exactly once: {report}"
    );
    let export = api
        .request(
            reqwest::Method::GET,
            "/v1/contacts:export?format=csv&filter=tag%3Dkilled",
        )
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("csv");
    let ids: std::collections::HashSet<&str> = export.lines().skip(1).filter_map(|l| l.split(',').nth(1)).collect();
    assert_eq!(ids.len(), rows, "no external id twice");
}

/// `crm import` writes the rows it could not import to a rejects file (the row as it was, and
/// why) that imports once fixed; a row too large to copy is named on stderr instead, so the
/// rejects file stays importable.
#[tokio::test]
async fn rejected_rows_go_to_a_file_that_imports_once_fixed() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "ada", Role::Admin);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("people.csv");
    let mut file = b"external_id,given_name,family_name,emails,tags\n".to_vec();
    file.extend_from_slice(b"f-1,Ada,Lovelace,ada@example.com,fix\n");
    file.extend_from_slice(b"f-2,Bo,\"Berg, Jr\",not-an-email,fix\n");
    file.extend_from_slice(b"f-3,Cy\n");
    file.extend_from_slice(format!("f-4,Huge,{},h@example.com,fix\n", "x".repeat(2 << 20)).as_bytes());
    std::fs::write(&path, file).expect("file");
    let import = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_crm"))
            .args(["import", path.to_str().expect("path"), "--endpoint", &suite.grpc])
            .env("CRM_TOKEN", token("acme", "ada", Role::Admin))
            .output()
            .expect("crm import")
    };

    let first = import(&path);
    assert!(first.status.success());
    let report = String::from_utf8_lossy(&first.stdout);
    assert!(
        report.contains("1 created, 0 updated, 0 unchanged, 3 rejected"),
        "{report}"
    );
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("line 5 of ") && stderr.contains("row: is larger than 1 MiB (not copied to the rejects file)"),
        "{stderr}"
    );
    let rejects_path = dir.path().join("people.rejected.csv");
    let rejects = std::fs::read_to_string(&rejects_path).expect("rejects file");
    let lines: Vec<&str> = rejects.lines().collect();
    assert_eq!(
        lines,
        [
            "external_id,given_name,family_name,emails,tags,error",
            "f-2,Bo,\"Berg, Jr\",not-an-email,fix,\"emails[0].address: must contain '@'\"",
            "f-3,Cy,\"row: has 2 columns; the header has 5\"",
        ]
        .map(|l| l.to_owned()),
        "the rows as they were, and why"
    );

    let fixed = rejects
        .replace("not-an-email", "bo@example.com")
        .replace("f-3,Cy,", "f-3,Cy,Chen,cy@example.com,fix,");
    std::fs::write(&rejects_path, fixed).expect("fix");
    let again = import(&rejects_path);
    let report = String::from_utf8_lossy(&again.stdout);
    assert!(
        report.contains("2 created, 0 updated, 0 unchanged, 0 rejected"),
        "{report}"
    );
    assert_eq!(count(&api, "tag%3Dfix").await, 3);
}

#[tokio::test]
async fn a_file_without_external_ids_matches_on_the_primary_email_and_says_so() {
    let suite = Suite::start();
    let api = Rest::as_user(&suite.rest, "acme", "ada", Role::Admin);
    let file = b"given_name,family_name,emails\nAda,Lovelace,ada@example.com\nBo,Berg,bo@example.com\n".to_vec();
    let (status, lines) = import(&api, "", file.clone()).await;
    assert_eq!(status, 200);
    let summary = &lines.last().expect("summary")["summary"];
    assert_eq!(
        (
            summary["created"].as_str(),
            summary["rejected"].as_str(),
            summary["naturalKey"].as_str()
        ),
        (Some("2"), Some("0"), Some("primary_email")),
        "{lines:?}"
    );
    let (_, again) = import(&api, "", file).await;
    let summary = &again.last().expect("summary")["summary"];
    assert_eq!(
        (summary["unchanged"].as_str(), summary["created"].as_str()),
        (Some("2"), Some("0")),
        "{again:?}"
    );

    // With the column, the external id stays the key; a key named is the key used.
    let with_ids = b"external_id,given_name,emails\ne-9,Cy,cy@example.com\n".to_vec();
    let (_, lines) = import(&api, "", with_ids).await;
    assert_eq!(lines.last().expect("summary")["summary"]["naturalKey"], "external_id");
    let (_, lines) = import(
        &api,
        "?naturalKey=external_id",
        b"given_name,emails\nDi,di@example.com\n".to_vec(),
    )
    .await;
    assert_eq!(lines.last().expect("summary")["summary"]["rejected"], "1", "{lines:?}");
}
