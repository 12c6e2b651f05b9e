//! Tenants never see each other's records: through the store, and on PostgreSQL through
//! row-level security too.

use super::*;

pub(super) async fn tenants_never_see_each_other(store: &dyn ContactStore) {
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let co = company("Acme");
    store
        .create_company(&a, &co, None, &audit(), false)
        .await
        .expect("company");
    let mut f = fields("Secret", "Person", "secret@acme.example");
    f.company = Some(co.id);
    let c = contact(f);
    store
        .create_contact(&a, &c, None, &audit(), false)
        .await
        .expect("create");
    let i = interaction(c.id, 1);
    store
        .create_interaction(&a, &i, None, &logged(&a))
        .await
        .expect("interaction");

    assert!(matches!(store.get_contact(&b, c.id).await, Err(StoreError::NotFound)));
    assert!(
        store.get_live_contacts(&b, &[c.id]).await.expect("live").is_empty(),
        "another tenant's id reads nothing"
    );
    assert_eq!(store.get_live_contacts(&a, &[c.id]).await.expect("live").len(), 1);
    assert_eq!(
        store.get_live_contacts(&a, &[c.id, c.id]).await.expect("live").len(),
        1,
        "ids may repeat; a contact comes once"
    );
    assert!(matches!(store.get_company(&b, co.id).await, Err(StoreError::NotFound)));
    assert!(matches!(
        store.get_interaction(&b, c.id, i.id).await,
        Err(StoreError::NotFound)
    ));
    let all = ListQuery {
        filter: ContactFilter::default(),
        order: Order {
            field: SortField::CreateTime,
            descending: true,
        },
        after: None,
        limit: 100,
    };
    assert!(store.list_contacts(&b, &all).await.expect("list").is_empty());
    let companies = ListQuery {
        filter: CompanyFilter::default(),
        order: Order {
            field: SortField::CreateTime,
            descending: true,
        },
        after: None,
        limit: 100,
    };
    assert!(store.list_companies(&b, &companies).await.expect("list").is_empty());
    let terms = SearchTerms::parse("secret").expect("terms");
    assert!(
        store
            .search_contacts(&b, &terms, 0, 10)
            .await
            .expect("search")
            .is_empty()
    );
    assert_eq!(store.search_contacts(&a, &terms, 0, 10).await.expect("search").len(), 1);
    assert!(
        store
            .list_interactions(&b, TimelineOf::Contact(c.id), None, 10)
            .await
            .expect("timeline")
            .is_empty()
    );
    assert!(
        store
            .list_interactions(&b, TimelineOf::Company(co.id), None, 10)
            .await
            .expect("timeline")
            .is_empty()
    );

    let mut hijack = c.clone();
    hijack.revision = c.revision.next();
    hijack.fields.company = None;
    assert!(matches!(
        store.update_contact(&b, &hijack, c.revision, &audit()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_contact(&b, c.id, None, &audit()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_company(&b, co.id, None, &audit()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_interaction(&b, c.id, i.id).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store
            .create_interaction(&b, &interaction(c.id, 2), None, &logged(&b))
            .await,
        Err(StoreError::NotFound)
    ));
    let mut linked = fields("Sneaky", "Link", "sneaky@b.example");
    linked.company = Some(co.id);
    assert!(matches!(
        store.create_contact(&b, &contact(linked), None, &audit(), false).await,
        Err(StoreError::UnknownCompany)
    ));
    assert_eq!(store.get_contact(&a, c.id).await.expect("still there"), c);
}

/// Row-level security is the second wall: even SQL without a tenant condition, run as the
/// serving role, sees and writes only the pinned tenant's rows.
#[tokio::test]
async fn postgres_row_level_security_is_forced() {
    use sqlx::Row;
    let Some(db) = TestDatabase::create("postgres_row_level_security_is_forced").await else {
        return;
    };
    migrate_test_db(&db.url).await;
    let pool = crm_platform::db::connect_postgres(&db.url, POSTGRES_APP_ROLE, 2)
        .await
        .expect("connect");
    let store = PgContactStore::new(pool.clone());
    let a = store
        .create_contact(
            &tenant("a"),
            &contact(fields("A", "A", "a@example.com")),
            None,
            &audit(),
            false,
        )
        .await
        .expect("a")
        .value;
    store
        .create_contact(
            &tenant("b"),
            &contact(fields("B", "B", "b@example.com")),
            None,
            &audit(),
            false,
        )
        .await
        .expect("b");

    let mut tx = crm_platform::db::begin_tenant(&pool, &tenant("a")).await.expect("tx");
    let visible: i64 = sqlx::query("SELECT count(*) AS n FROM contacts")
        .fetch_one(&mut *tx)
        .await
        .expect("count")
        .get("n");
    assert_eq!(visible, 1, "tenant a sees only its own row");
    let sneaky = sqlx::query("UPDATE contacts SET tenant_id = 'a' WHERE tenant_id = 'b'")
        .execute(&mut *tx)
        .await
        .expect("update");
    assert_eq!(
        sneaky.rows_affected(),
        0,
        "other tenants' rows cannot even be addressed"
    );
    let forged = sqlx::query(
        "INSERT INTO companies (tenant_id, id, display_name, owner, create_time, update_time, revision) VALUES ('b', gen_random_uuid(), 'x', 'u', now(), now(), 1)",
    )
    .execute(&mut *tx)
    .await;
    assert!(forged.is_err(), "rows of another tenant cannot be written");
    drop(tx);

    // The functions that pin the tenant for their own statement (contact_write,
    // contact_live) refuse to re-pin a transaction pinned to another tenant, and leave
    // nothing pinned after their statement.
    let mut tx = crm_platform::db::begin_tenant(&pool, &tenant("a")).await.expect("tx");
    let repinned = sqlx::query("SELECT count(*) FROM contact_live('b', ARRAY[gen_random_uuid()])")
        .execute(&mut *tx)
        .await
        .expect_err("re-pinned to b");
    assert!(
        matches!(&repinned, sqlx::Error::Database(e) if e.code().as_deref() == Some("42501")),
        "{repinned}"
    );
    drop(tx);
    let mut conn = pool.acquire().await.expect("conn");
    let live: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM contact_live('a', $1)")
        .bind(vec![a.id.0])
        .fetch_all(&mut *conn)
        .await
        .expect("live");
    assert_eq!(live, [a.id.0]);
    let crossed: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM contact_live('b', $1)")
        .bind(vec![a.id.0])
        .fetch_all(&mut *conn)
        .await
        .expect("live");
    assert!(crossed.is_empty(), "pinned to b, a's contact is not there");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(&mut *conn)
        .await
        .expect("count");
    assert_eq!(after, 0, "the function's pin ends with its statement");
    drop(conn);

    let mut conn = pool.acquire().await.expect("conn");
    let unpinned: i64 = sqlx::query("SELECT count(*) AS n FROM contacts")
        .fetch_one(&mut *conn)
        .await
        .expect("count")
        .get("n");
    assert_eq!(unpinned, 0, "without a pinned tenant nothing is visible");
    let bypass: bool = sqlx::query("SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user")
        .fetch_one(&mut *conn)
        .await
        .expect("role")
        .get(0);
    assert!(!bypass, "the serving role cannot bypass RLS");
    drop(conn);
    pool.close().await;
    db.drop_database().await;
}
