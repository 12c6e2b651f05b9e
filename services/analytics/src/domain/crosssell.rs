//! Cross-sell: which products the customers' won deals hold together (support, confidence and
//! lift of each pair), and for a customer the products it lacks that its products most often
//! come with, each with its evidence.
//!
//! A customer's basket is every product of its won deals; the shares are of the tenant's
//! customers with a basket.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Each customer's products.
pub type Baskets = BTreeMap<Uuid, BTreeSet<Uuid>>;

/// The baskets of (customer, product) rows.
pub fn baskets(rows: &[(Uuid, Uuid)]) -> Baskets {
    let mut baskets = Baskets::new();
    for (customer, product) in rows {
        baskets.entry(*customer).or_default().insert(*product);
    }
    baskets
}

/// A rule: customers with `from` also have `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub from: Uuid,
    pub to: Uuid,
    /// Customers with both.
    pub customers: i64,
    /// Share of the customers with both.
    pub support: f64,
    /// Share of the customers with `from` who have `to`.
    pub confidence: f64,
    /// confidence / the share of customers with `to` (above 1: more often together than by
    /// chance).
    pub lift: f64,
}

/// The default least support and confidence of a rule.
pub const MIN_SUPPORT: f64 = 0.01;
pub const MIN_CONFIDENCE: f64 = 0.1;

/// Every rule with at least `min_support` and `min_confidence`, by lift, then confidence,
/// then support (highest first), then products' ids.
#[allow(clippy::cast_precision_loss)]
pub fn pairs(baskets: &Baskets, min_support: f64, min_confidence: f64) -> Vec<Pair> {
    let n = baskets.len() as f64;
    let mut holding: BTreeMap<Uuid, i64> = BTreeMap::new();
    let mut both: BTreeMap<(Uuid, Uuid), i64> = BTreeMap::new();
    for products in baskets.values() {
        for a in products {
            *holding.entry(*a).or_default() += 1;
            for b in products.iter().filter(|b| *b != a) {
                *both.entry((*a, *b)).or_default() += 1;
            }
        }
    }
    let mut rules: Vec<Pair> = both
        .into_iter()
        .filter_map(|((from, to), together)| {
            let support = together as f64 / n;
            let confidence = together as f64 / holding[&from] as f64;
            let lift = confidence / (holding[&to] as f64 / n);
            (support >= min_support && confidence >= min_confidence).then_some(Pair {
                from,
                to,
                customers: together,
                support,
                confidence,
                lift,
            })
        })
        .collect();
    rules.sort_by(|x, y| {
        y.lift
            .total_cmp(&x.lift)
            .then(y.confidence.total_cmp(&x.confidence))
            .then(y.support.total_cmp(&x.support))
            .then((x.from, x.to).cmp(&(y.from, y.to)))
    });
    rules
}

/// A product a customer lacks, and the rules from its products that point to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub product: Uuid,
    /// The highest confidence among the evidence.
    pub confidence: f64,
    pub evidence: Vec<Pair>,
}

/// The products `customer` lacks that its products come with, by the rules above the
/// thresholds: by confidence, then lift (highest first).
pub fn recommend(baskets: &Baskets, customer: Uuid, min_support: f64, min_confidence: f64) -> Vec<Recommendation> {
    let Some(own) = baskets.get(&customer) else {
        return Vec::new();
    };
    let mut found: BTreeMap<Uuid, Vec<Pair>> = BTreeMap::new();
    for rule in pairs(baskets, min_support, min_confidence) {
        if own.contains(&rule.from) && !own.contains(&rule.to) {
            found.entry(rule.to).or_default().push(rule);
        }
    }
    let mut recommendations: Vec<Recommendation> = found
        .into_iter()
        .map(|(product, evidence)| Recommendation {
            product,
            confidence: evidence.iter().map(|p| p.confidence).fold(0.0, f64::max),
            evidence,
        })
        .collect();
    recommendations.sort_by(|x, y| {
        y.confidence
            .total_cmp(&x.confidence)
            .then(y.evidence[0].lift.total_cmp(&x.evidence[0].lift))
            .then(x.product.cmp(&y.product))
    });
    recommendations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_recommendations_come_with_their_evidence() {
        let (crm, mail, phone, ads) = (
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            Uuid::from_u128(3),
            Uuid::from_u128(4),
        );
        // Four customers: {crm, mail}, {crm, mail, phone}, {crm}, {ads}.
        let rows = vec![
            (Uuid::from_u128(10), crm),
            (Uuid::from_u128(10), mail),
            (Uuid::from_u128(11), crm),
            (Uuid::from_u128(11), mail),
            (Uuid::from_u128(11), phone),
            (Uuid::from_u128(12), crm),
            (Uuid::from_u128(13), ads),
        ];
        let baskets = baskets(&rows);
        let rules = pairs(&baskets, 0.0, 0.0);
        let crm_mail = rules
            .iter()
            .find(|p| (p.from, p.to) == (crm, mail))
            .expect("crm -> mail");
        // Both: 2 of 4 customers; crm: 3; mail: 2. Confidence 2/3, lift (2/3) / (2/4).
        assert_eq!(crm_mail.customers, 2);
        assert!((crm_mail.support - 0.5).abs() < 1e-12);
        assert!((crm_mail.confidence - 2.0 / 3.0).abs() < 1e-12);
        assert!((crm_mail.lift - (2.0 / 3.0) / 0.5).abs() < 1e-12);
        // Thresholds: confidence 0.6 keeps crm -> mail (2/3), mail -> crm (1), phone -> * (1),
        // mail -> phone (1/2) goes.
        let kept = pairs(&baskets, 0.0, 0.6);
        assert!(kept.iter().all(|p| p.confidence >= 0.6));
        assert!(!kept.iter().any(|p| (p.from, p.to) == (mail, phone)));
        // The customer with crm alone: mail (2/3 of crm's customers), then phone (1/3).
        let advice = recommend(&baskets, Uuid::from_u128(12), 0.0, 0.0);
        let products: Vec<Uuid> = advice.iter().map(|r| r.product).collect();
        assert_eq!(products, [mail, phone]);
        assert_eq!(advice[0].evidence[0].from, crm);
        // With a least support of 0.3, phone (1 customer of 4) is not advised.
        let advice = recommend(&baskets, Uuid::from_u128(12), 0.3, 0.0);
        assert_eq!(advice.iter().map(|r| r.product).collect::<Vec<_>>(), [mail]);
        assert!(recommend(&baskets, Uuid::from_u128(99), 0.0, 0.0).is_empty());
    }
}
