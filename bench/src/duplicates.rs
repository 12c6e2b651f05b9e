//! FindDuplicates over a large tenant with few duplicates: many shared match keys (common
//! family names) whose holders are not alike, and some planted pairs. Every page is walked,
//! so the figure is what a data steward paging through the whole list waits for.

use std::time::{Duration, Instant};

use crm_proto::crm::contact::v1 as pb;

use super::{BenchArgs, client, ms, tool};

/// Contacts per name block: a common family name.
const PER_BLOCK: usize = 10;
/// One planted duplicate (same name as an existing contact, another address) per this many.
const PLANT_EVERY: usize = 1000;

pub(crate) async fn run(args: &BenchArgs, url: &str, grpc: &str) -> anyhow::Result<()> {
    let rows = args.duplicate_rows;
    let blocks = (rows / PER_BLOCK).max(1);
    // Seeded with SQL (not measured), keys included, as the service writes them: an address
    // key each, and a name block (family name and given initial) shared by PER_BLOCK people.
    let seed = format!(
        "WITH people AS ( \
           SELECT i, 'Dupe' || i AS given, 'Block' || (i % {blocks}) AS family, 'd' || i || '@example.com' AS email \
           FROM generate_series(1, {rows}) AS i \
           UNION ALL \
           SELECT {rows} + i, 'Dupe' || i, 'Block' || (i % {blocks}), 'planted' || i || '@example.com' \
           FROM generate_series({PLANT_EVERY}, {rows}, {PLANT_EVERY}) AS i), \
         made AS ( \
           INSERT INTO contacts (tenant_id, id, given_name, family_name, emails, primary_email, lifecycle_stage, source, \
                                 owner, search_text, create_time, update_time, revision) \
           SELECT 'bench', gen_random_uuid(), given, family, \
                  jsonb_build_array(jsonb_build_object('address', email, 'primary', true)), email, 'lead', 'import', \
                  'bench', given || ' ' || family || ' ' || email, now(), now(), 1 \
           FROM people RETURNING id, family_name, primary_email) \
         INSERT INTO contact_keys (tenant_id, kind, value, contact_id) \
         SELECT 'bench', 'email', primary_email, id FROM made \
         UNION ALL SELECT 'bench', 'name', lower(family_name) || '|d', id FROM made"
    );
    tool("psql", &[url, "-qc", &seed])?;
    tool("psql", &[url, "-qc", "VACUUM ANALYZE contacts"])?;
    tool("psql", &[url, "-qc", "VACUUM ANALYZE contact_keys"])?;
    let planted = rows / PLANT_EVERY;

    let mut client = client(grpc).await?;
    let mut token = String::new();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut groups = 0;
    let started = Instant::now();
    loop {
        let asked = Instant::now();
        let page = client
            .find_duplicates(pb::FindDuplicatesRequest {
                page_size: 50,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        latencies.push(asked.elapsed());
        groups += page
            .groups
            .iter()
            .filter(|g| g.contacts.len() == 2 && g.reasons.contains(&(pb::MatchReason::Name as i32)))
            .count();
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let total = started.elapsed();
    latencies.sort_unstable();
    let at = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "| FindDuplicates, every page, over {} seeded contacts ({blocks} shared name blocks, {planted} planted pairs) | {} pages in {:.1} s, page p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {groups} of {planted} planted pairs found | | | (no target) |",
        rows + planted,
        latencies.len(),
        total.as_secs_f64(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0)),
    );
    anyhow::ensure!(
        groups >= planted,
        "FindDuplicates found {groups} of {planted} planted pairs"
    );
    Ok(())
}
