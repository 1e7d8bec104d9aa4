//! A real ETL as a salt workflow: three CSV files in, one Markdown report out.
//!
//! ```text
//! cargo run --example etl -- run
//! ```
//!
//! It reads `examples/data/customers.csv`, `products.csv` and `orders.csv`, and writes
//! `.salt/reports/etl-run-<RUN>.md` under the directory it is run from. What it shows:
//!
//! - **Parallel extracts.** The three files are read by three nodes that start at once.
//! - **A graph planned up front.** Every step takes the handles of the steps it needs; the
//!   workflow awaits nothing but the final report, so salt knows the whole graph at once and runs
//!   each step as soon as its inputs are ready (`graph RUN` draws it).
//! - **Bad rows are reported, not dropped.** Missing fields, unparsable numbers, unknown ids,
//!   negative quantities… each rejected row is listed in the report with its file, line and
//!   reason. The shipped data has 14 of them on purpose.
//! - **Retries.** `fetch_rates` fails its first attempt (a simulated outage of a rates service)
//!   and succeeds on the retry 200ms later; `show RUN` lists both attempts.
//! - **Logs.** Steps write a few lines with `ctx.log`; read them with `logs RUN`.
//!
//! Its input is optional: `{"data_dir": "...", "out_dir": "..."}`; by default the data shipped
//! next to this file and `.salt/reports`. Afterwards:
//!
//! ```text
//! cargo run --example etl -- show 1            # the run, node by node (two attempts of fetch_rates)
//! cargo run --example etl -- logs 1            # what each step logged
//! cargo run --example etl -- graph 1 --format mermaid
//! cargo run --example etl -- run --executor process   # every attempt in its own process
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use salt::prelude::*;
use serde::de::DeserializeOwned;

// ANCHOR: types
/// One row of `customers.csv`, as read: every field is text, possibly empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
struct RawCustomer {
    /// A number, like `1001`.
    customer_id: String,
    /// Display name.
    name: String,
    /// Contact address.
    email: String,
    /// A country as typed into the CRM: `DE`, `Germany`, `deutschland`…
    country: String,
    /// `YYYY-MM-DD`.
    signup_date: String,
}

/// One row of `products.csv`, as read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
struct RawProduct {
    /// A number, like `501`.
    product_id: String,
    /// Display name.
    name: String,
    /// `Beans`, `Tea`, `Brewing gear`, `Accessories`.
    category: String,
    /// The catalogue price in euros.
    list_price_eur: String,
}

/// One row of `orders.csv`, as read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
struct RawOrder {
    /// Like `SO-24001`.
    order_id: String,
    /// `YYYY-MM-DD`.
    order_date: String,
    /// A `customer_id` of `customers.csv`.
    customer_id: String,
    /// A `product_id` of `products.csv`.
    product_id: String,
    /// How many units, a positive integer.
    quantity: String,
    /// The price of one unit in `currency`, like `12.50`.
    unit_price: String,
    /// An ISO 4217 code: `EUR`, `USD`, `GBP`…
    currency: String,
}

/// A row as read, with the line of the file it comes from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Lined<T> {
    /// The line number in the file (the header is line 1).
    line: u64,
    /// The row.
    row: T,
}

/// What an extract step read from one file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Extracted<T> {
    /// The file name, like `orders.csv`.
    source: String,
    /// The rows that could be read.
    rows: Vec<Lined<T>>,
    /// The rows that could not even be read as CSV.
    rejects: Vec<Reject>,
}

/// A row set aside, and why.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Reject {
    /// The file it comes from.
    source: String,
    /// Its line in that file.
    line: u64,
    /// Every problem found with it, separated by `; `.
    reason: String,
}

/// The outcome of validating one source: the rows that passed, and the ones that did not.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Checked<T> {
    /// The file name.
    source: String,
    /// How many data rows the file has.
    read: usize,
    /// The valid rows, typed.
    rows: Vec<T>,
    /// The rejected rows.
    rejects: Vec<Reject>,
}

/// A valid customer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Customer {
    /// Its id.
    id: u32,
    /// Its name.
    name: String,
    /// Its country: as typed after validation, its English name after `normalise_customers`.
    country: String,
}

/// A valid product.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Product {
    /// Its id.
    id: u32,
    /// Its name.
    name: String,
    /// Its category.
    category: String,
}

/// A valid order line, in its own currency.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Order {
    /// Its id.
    id: String,
    /// The month it was placed, `YYYY-MM`.
    month: String,
    /// Who placed it.
    customer_id: u32,
    /// What was ordered.
    product_id: u32,
    /// How many units.
    quantity: u32,
    /// The price of one unit, in cents of `currency`.
    unit_price_cents: u64,
    /// The currency of the price.
    currency: String,
}

/// An order line with its value in euros.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct EurOrder {
    /// The order.
    order: Order,
    /// `quantity × unit price`, converted to euro cents (rounded half up).
    revenue_cents: u64,
}

/// An order line joined with its customer and product: one row of the fact table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Sale {
    /// The order id.
    order_id: String,
    /// `YYYY-MM`.
    month: String,
    /// The customer's id.
    customer_id: u32,
    /// The customer's name.
    customer: String,
    /// The customer's country (normalised).
    country: String,
    /// The product's name.
    product: String,
    /// The product's category.
    category: String,
    /// Units sold.
    quantity: u32,
    /// Revenue in euro cents.
    revenue_cents: u64,
}
// ANCHOR_END: types

/// Exchange rates to the euro.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Rates {
    /// The day they apply to.
    date: String,
    /// For each currency, the value of one unit in millionths of a euro (`USD` → `920000`:
    /// one dollar is worth 0.92 euros).
    micro_eur: BTreeMap<String, u64>,
}

/// What to group revenue by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Dimension {
    /// The customer's country.
    Country,
    /// The product's category.
    Category,
    /// The month of the order.
    Month,
}

/// One group of a breakdown.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Group {
    /// The country, category or month.
    key: String,
    /// How many order lines.
    orders: usize,
    /// How many units.
    units: u64,
    /// Revenue in euro cents.
    revenue_cents: u64,
}

/// Revenue broken down along one dimension.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Breakdown {
    /// The dimension.
    by: Dimension,
    /// Its groups: by revenue, largest first (months in calendar order).
    groups: Vec<Group>,
}

/// A customer's total.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct CustomerTotal {
    /// The customer's name.
    customer: String,
    /// Their country.
    country: String,
    /// How many order lines.
    orders: usize,
    /// Revenue in euro cents.
    revenue_cents: u64,
}

/// Row counts and rejects of the three sources.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Quality {
    /// Data rows in each file.
    read: Counts,
    /// Rows that passed validation.
    loaded: Counts,
    /// Every rejected row, by file and line.
    rejects: Vec<Reject>,
}

/// A count per source.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema)]
struct Counts {
    /// In `customers.csv`.
    customers: usize,
    /// In `products.csv`.
    products: usize,
    /// In `orders.csv`.
    orders: usize,
}

/// What the workflow returns (and `run` prints).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct EtlOutput {
    /// The path of the Markdown report.
    report: String,
    /// The run in one sentence.
    summary: String,
    /// Data rows read from each file.
    rows_read: Counts,
    /// Rows that passed validation.
    rows_loaded: Counts,
    /// Rows set aside (listed in the report).
    bad_rows: usize,
    /// Total revenue of the valid orders, in euros.
    total_revenue_eur: f64,
}

// ANCHOR: extract
/// Reads `customers.csv`.
#[task(timeout = "30s")]
async fn extract_customers(path: String, ctx: &Context) -> salt::Result<Extracted<RawCustomer>> {
    read_csv(&path, ctx)
}

/// Reads `products.csv`.
#[task(timeout = "30s")]
async fn extract_products(path: String, ctx: &Context) -> salt::Result<Extracted<RawProduct>> {
    read_csv(&path, ctx)
}

/// Reads `orders.csv`.
#[task(timeout = "30s")]
async fn extract_orders(path: String, ctx: &Context) -> salt::Result<Extracted<RawOrder>> {
    read_csv(&path, ctx)
}

/// Reads a CSV file with a header row into rows of `T`, by column name. Short rows are read
/// with their missing fields empty (validation reports them); a row that is not even valid CSV
/// is set aside as a reject. A file that cannot be opened fails the step for good.
fn read_csv<T: DeserializeOwned>(path: &str, ctx: &Context) -> salt::Result<Extracted<T>> {
    let source = Path::new(path).file_name().map_or_else(|| path.to_owned(), |f| f.to_string_lossy().into_owned());
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| salt::Error::fatal(format!("cannot read {path}: {e}")))?;
    let headers = reader.headers()?.clone();
    let (mut rows, mut rejects) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                rejects.push(Reject { source: source.clone(), line, reason: format!("not valid CSV: {e}") });
                continue;
            }
        };
        let line = record.position().map_or(0, csv::Position::line);
        if record.len() > headers.len() {
            let reason = format!("{} fields where the header has {} (an unquoted comma?)", record.len(), headers.len());
            rejects.push(Reject { source: source.clone(), line, reason });
            continue;
        }
        // A short row gets empty fields, which validation reports as missing.
        let mut record = record;
        while record.len() < headers.len() {
            record.push_field("");
        }
        match record.deserialize(Some(&headers)) {
            Ok(row) => rows.push(Lined { line, row }),
            Err(e) => rejects.push(Reject { source: source.clone(), line, reason: format!("unreadable row: {e}") }),
        }
    }
    ctx.log(format!("read {} rows from {path}", rows.len() + rejects.len()));
    Ok(Extracted { source, rows, rejects })
}
// ANCHOR_END: extract

// ANCHOR: flaky
/// Fetches today's exchange rates to the euro.
///
/// A stand-in for a call to a rates service: the table is fixed, and the first attempt fails
/// on purpose, as a flaky network call would. The retry policy (2 retries, 200ms apart) makes
/// the step succeed on its second attempt; `show RUN` records both.
#[task(retries = 2, backoff = "200ms")]
async fn fetch_rates(ctx: &Context) -> salt::Result<Rates> {
    if ctx.attempt() == 1 {
        ctx.log("rates service: 503 Service Unavailable");
        return Err(salt::Error::msg("rates service unavailable (simulated transient failure)"));
    }
    let micro_eur = [("EUR", 1_000_000), ("USD", 920_000), ("GBP", 1_170_000), ("CHF", 1_040_000), ("SEK", 87_000)];
    ctx.log(format!("attempt {}: got {} rates", ctx.attempt(), micro_eur.len()));
    Ok(Rates {
        date: "2024-06-28".to_owned(),
        micro_eur: micro_eur.into_iter().map(|(c, r)| (c.to_owned(), r)).collect(),
    })
}
// ANCHOR_END: flaky

/// Checks every customer row: a numeric, unique id, a name, an email, a known country and a
/// valid sign-up date.
#[task]
async fn validate_customers(raw: Extracted<RawCustomer>, ctx: &Context) -> Checked<Customer> {
    let mut first_seen: HashMap<u32, u64> = HashMap::new();
    let checked = check(raw, |row, line, problems| {
        let id = parse_id("customer_id", &row.customer_id, problems);
        required("name", &row.name, problems);
        if required("email", &row.email, problems) && !row.email.contains('@') {
            problems.push(format!("email {:?} has no @", row.email));
        }
        if required("country", &row.country, problems) && canonical_country(&row.country).is_none() {
            problems.push(format!("country {:?} is not recognised", row.country));
        }
        if !row.signup_date.is_empty() && parse_date(&row.signup_date).is_none() {
            problems.push(format!("signup_date {:?} is not a date (YYYY-MM-DD)", row.signup_date));
        }
        let id = unique(id?, line, "customer_id", &mut first_seen, problems)?;
        problems.is_empty().then(|| Customer { id, name: row.name.clone(), country: row.country.clone() })
    });
    ctx.log(format!("customers: {} valid, {} rejected", checked.rows.len(), checked.rejects.len()));
    checked
}

/// Checks every product row: a numeric, unique id, a name, a category and a price.
#[task]
async fn validate_products(raw: Extracted<RawProduct>, ctx: &Context) -> Checked<Product> {
    let mut first_seen: HashMap<u32, u64> = HashMap::new();
    let checked = check(raw, |row, line, problems| {
        let id = parse_id("product_id", &row.product_id, problems);
        required("name", &row.name, problems);
        required("category", &row.category, problems);
        parse_cents("list_price_eur", &row.list_price_eur, problems);
        let id = unique(id?, line, "product_id", &mut first_seen, problems)?;
        problems.is_empty().then(|| Product { id, name: row.name.clone(), category: row.category.clone() })
    });
    ctx.log(format!("products: {} valid, {} rejected", checked.rows.len(), checked.rejects.len()));
    checked
}

/// Checks every order row against the valid customers and products and the known currencies:
/// an id, a real date, known customer and product ids, a positive quantity, a price, and a
/// currency with an exchange rate.
#[task]
async fn validate_orders(
    raw: Extracted<RawOrder>,
    customers: Checked<Customer>,
    products: Checked<Product>,
    rates: Rates,
    ctx: &Context,
) -> Checked<Order> {
    let customer_ids: HashSet<u32> = customers.rows.iter().map(|c| c.id).collect();
    let product_ids: HashSet<u32> = products.rows.iter().map(|p| p.id).collect();
    let checked = check(raw, |row, _line, problems| {
        required("order_id", &row.order_id, problems);
        let date = parse_date(&row.order_date);
        if date.is_none() && required("order_date", &row.order_date, problems) {
            problems.push(format!("order_date {:?} is not a date (YYYY-MM-DD)", row.order_date));
        }
        let customer_id = parse_id("customer_id", &row.customer_id, problems);
        if let Some(id) = customer_id.filter(|id| !customer_ids.contains(id)) {
            problems.push(format!("unknown customer_id {id}"));
        }
        let product_id = parse_id("product_id", &row.product_id, problems);
        if let Some(id) = product_id.filter(|id| !product_ids.contains(id)) {
            problems.push(format!("unknown product_id {id}"));
        }
        let quantity = parse_quantity(&row.quantity, problems);
        let unit_price_cents = parse_cents("unit_price", &row.unit_price, problems);
        if required("currency", &row.currency, problems) && !rates.micro_eur.contains_key(&row.currency) {
            problems.push(format!("no exchange rate for currency {:?}", row.currency));
        }
        if !problems.is_empty() {
            return None;
        }
        Some(Order {
            id: row.order_id.clone(),
            month: date?[..7].to_owned(),
            customer_id: customer_id?,
            product_id: product_id?,
            quantity: quantity?,
            unit_price_cents: unit_price_cents?,
            currency: row.currency.clone(),
        })
    });
    ctx.log(format!("orders: {} valid, {} rejected", checked.rows.len(), checked.rejects.len()));
    checked
}

/// Collects the row counts and every rejected row of the three sources.
#[task]
async fn data_quality(customers: Checked<Customer>, products: Checked<Product>, orders: Checked<Order>) -> Quality {
    let read = Counts { customers: customers.read, products: products.read, orders: orders.read };
    let loaded = Counts { customers: customers.rows.len(), products: products.rows.len(), orders: orders.rows.len() };
    let rejects = [customers.rejects, products.rejects, orders.rejects].concat();
    Quality { read, loaded, rejects }
}

/// Replaces each customer's country as typed (`DE`, ` deutschland `) by its English name
/// (`Germany`).
#[task]
async fn normalise_customers(customers: Checked<Customer>, ctx: &Context) -> salt::Result<Vec<Customer>> {
    let mut renamed = 0;
    let customers = customers
        .rows
        .into_iter()
        .map(|mut c| {
            let name = canonical_country(&c.country).ok_or_else(|| {
                salt::Error::fatal(format!("customer {}: country {:?} passed validation", c.id, c.country))
            })?;
            if c.country != name {
                renamed += 1;
                c.country = name.to_owned();
            }
            Ok(c)
        })
        .collect::<salt::Result<Vec<_>>>()?;
    ctx.log(format!("normalised {renamed} of {} country names", customers.len()));
    Ok(customers)
}

/// Transforms the valid orders: converts every line to euros, `quantity × unit price × rate`
/// in cents, rounded half up.
#[task]
async fn transform(orders: Checked<Order>, rates: Rates, ctx: &Context) -> salt::Result<Vec<EurOrder>> {
    let mut foreign = 0;
    let orders = orders
        .rows
        .into_iter()
        .map(|order| {
            let rate = *rates
                .micro_eur
                .get(&order.currency)
                .ok_or_else(|| salt::Error::fatal(format!("order {}: no rate for {}", order.id, order.currency)))?;
            if order.currency != "EUR" {
                foreign += 1;
            }
            let micro = u64::from(order.quantity) * order.unit_price_cents * rate;
            Ok(EurOrder { revenue_cents: (micro + 500_000) / 1_000_000, order })
        })
        .collect::<salt::Result<Vec<_>>>()?;
    ctx.log(format!("converted {foreign} of {} order lines to EUR at the rates of {}", orders.len(), rates.date));
    Ok(orders)
}

/// Joins each order line with its customer and product.
#[task]
async fn join_sales(
    orders: Vec<EurOrder>,
    customers: Vec<Customer>,
    products: Checked<Product>,
) -> salt::Result<Vec<Sale>> {
    let customers: HashMap<u32, Customer> = customers.into_iter().map(|c| (c.id, c)).collect();
    let products: HashMap<u32, Product> = products.rows.into_iter().map(|p| (p.id, p)).collect();
    orders
        .into_iter()
        .map(|line| {
            let (order, revenue_cents) = (line.order, line.revenue_cents);
            let customer = customers.get(&order.customer_id);
            let product = products.get(&order.product_id);
            let (Some(c), Some(p)) = (customer, product) else {
                let message = format!("order {} refers to a customer or product that is not loaded", order.id);
                return Err(salt::Error::fatal(message));
            };
            Ok(Sale {
                order_id: order.id,
                month: order.month,
                customer_id: c.id,
                customer: c.name.clone(),
                country: c.country.clone(),
                product: p.name.clone(),
                category: p.category.clone(),
                quantity: order.quantity,
                revenue_cents,
            })
        })
        .collect()
}

/// Sums revenue, units and order lines by country, category or month.
#[task]
async fn revenue_by(sales: Vec<Sale>, by: Dimension) -> Breakdown {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for s in &sales {
        let key = match by {
            Dimension::Country => &s.country,
            Dimension::Category => &s.category,
            Dimension::Month => &s.month,
        };
        let g = groups.entry(key.clone()).or_insert_with(|| Group {
            key: key.clone(),
            orders: 0,
            units: 0,
            revenue_cents: 0,
        });
        g.orders += 1;
        g.units += u64::from(s.quantity);
        g.revenue_cents += s.revenue_cents;
    }
    let mut groups: Vec<Group> = groups.into_values().collect();
    if by != Dimension::Month {
        groups.sort_by(|a, b| b.revenue_cents.cmp(&a.revenue_cents).then_with(|| a.key.cmp(&b.key)));
    }
    Breakdown { by, groups }
}

/// The `n` customers with the most revenue.
#[task]
async fn top_customers(sales: Vec<Sale>, n: usize) -> Vec<CustomerTotal> {
    let mut totals: BTreeMap<u32, CustomerTotal> = BTreeMap::new();
    for s in sales {
        let t = totals.entry(s.customer_id).or_insert_with(|| CustomerTotal {
            customer: s.customer.clone(),
            country: s.country.clone(),
            orders: 0,
            revenue_cents: 0,
        });
        t.orders += 1;
        t.revenue_cents += s.revenue_cents;
    }
    let mut totals: Vec<CustomerTotal> = totals.into_values().collect();
    // A stable sort: ties stay in customer id order.
    totals.sort_by_key(|t| std::cmp::Reverse(t.revenue_cents));
    totals.truncate(n);
    totals
}

/// Writes the Markdown report to `out_dir/etl-run-<RUN>.md` and returns the run's summary.
#[allow(clippy::too_many_arguments)]
#[task]
async fn write_report(
    out_dir: String,
    data_dir: String,
    quality: Quality,
    by_country: Breakdown,
    by_category: Breakdown,
    by_month: Breakdown,
    top: Vec<CustomerTotal>,
    rates: Rates,
    ctx: &Context,
) -> salt::Result<EtlOutput> {
    let total: u64 = by_country.groups.iter().map(|g| g.revenue_cents).sum();
    let orders: usize = by_country.groups.iter().map(|g| g.orders).sum();
    let units: u64 = by_country.groups.iter().map(|g| g.units).sum();
    let generated = jiff::Timestamp::try_from(ctx.now().await)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    let (read, loaded) = (quality.read, quality.loaded);
    let bad_rows = quality.rejects.len();

    let mut md = String::new();
    let _ = writeln!(md, "# Sales report — salt run {}\n", ctx.run_id());
    let _ = writeln!(md, "Generated {generated} by the `etl` example from `{data_dir}`.");
    let _ = writeln!(md, "See how it ran with `show {run}`, `logs {run}` and `graph {run}`.\n", run = ctx.run_id());
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(md, "| | |\n|---|---:|");
    let _ = writeln!(md, "| Total revenue | **{}** |", eur(total));
    let _ = writeln!(md, "| Order lines | {orders} |");
    let _ = writeln!(md, "| Units sold | {units} |");
    let _ = writeln!(
        md,
        "| Average order line | {} |",
        eur((total + orders as u64 / 2).checked_div(orders as u64).unwrap_or(0))
    );
    let _ = writeln!(md, "| Customers loaded | {} of {} |", loaded.customers, read.customers);
    let _ = writeln!(md, "| Products loaded | {} of {} |", loaded.products, read.products);
    let _ = writeln!(md, "| Orders loaded | {} of {} |", loaded.orders, read.orders);
    let _ = writeln!(md, "| Rows rejected | {bad_rows} |\n");

    for (title, breakdown) in [("country", &by_country), ("category", &by_category), ("month", &by_month)] {
        let _ = writeln!(md, "## Revenue by {title}\n");
        let _ = writeln!(
            md,
            "| {} | Orders | Units | Revenue (EUR) | Share |\n|---|---:|---:|---:|---:|",
            capitalise(title)
        );
        for g in &breakdown.groups {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                g.key,
                g.orders,
                g.units,
                eur(g.revenue_cents),
                percent(g.revenue_cents, total)
            );
        }
        md.push('\n');
    }

    let _ = writeln!(md, "## Top {} customers\n", top.len());
    let _ = writeln!(md, "| # | Customer | Country | Orders | Revenue (EUR) |\n|---:|---|---|---:|---:|");
    for (i, c) in top.iter().enumerate() {
        let _ =
            writeln!(md, "| {} | {} | {} | {} | {} |", i + 1, c.customer, c.country, c.orders, eur(c.revenue_cents));
    }

    let _ = writeln!(md, "\n## Exchange rates ({})\n", rates.date);
    let _ = writeln!(md, "| Currency | EUR per unit |\n|---|---:|");
    for (currency, micro) in &rates.micro_eur {
        let _ = writeln!(md, "| {currency} | {}.{:06} |", micro / 1_000_000, micro % 1_000_000);
    }

    let _ = writeln!(md, "\n## Rejected rows ({bad_rows})\n");
    if quality.rejects.is_empty() {
        let _ = writeln!(md, "None.");
    } else {
        let _ = writeln!(md, "| File | Line | Reason |\n|---|---:|---|");
        for r in &quality.rejects {
            let _ = writeln!(md, "| {} | {} | {} |", r.source, r.line, r.reason.replace('|', "\\|"));
        }
    }

    std::fs::create_dir_all(&out_dir)?;
    let path = Path::new(&out_dir).join(format!("etl-run-{}.md", ctx.run_id()));
    std::fs::write(&path, md)?;
    let report = path.display().to_string();
    ctx.log(format!("wrote {report}"));

    let top_country = by_country.groups.first().map_or("-", |g| g.key.as_str());
    let summary = format!(
        "{} revenue from {} orders ({} units); top country {top_country}; {bad_rows} bad rows set aside",
        eur(total),
        loaded.orders,
        units,
    );
    Ok(EtlOutput {
        report,
        summary,
        rows_read: read,
        rows_loaded: loaded,
        bad_rows,
        total_revenue_eur: total as f64 / 100.0,
    })
}

// ANCHOR: workflow
/// Extracts the three CSV files, validates and transforms them, joins and aggregates the
/// orders, and writes a Markdown report.
///
/// Nothing is awaited until the report: each call spawns its node at once and hands its
/// handle to the steps that need its output, so independent steps run in parallel.
#[workflow(input = r#"{"data_dir": null, "out_dir": null}"#)]
async fn etl(data_dir: Option<String>, out_dir: Option<String>, ctx: &Context) -> salt::Result<EtlOutput> {
    let data_dir = data_dir.unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/data").to_owned());
    let out_dir = out_dir.unwrap_or_else(|| ".salt/reports".to_owned());
    ctx.log(format!("reading {data_dir}, writing to {out_dir}"));

    // Extract: four nodes with no inputs from each other, so they all start at once.
    let raw_customers = extract_customers(format!("{data_dir}/customers.csv"));
    let raw_products = extract_products(format!("{data_dir}/products.csv"));
    let raw_orders = extract_orders(format!("{data_dir}/orders.csv"));
    let rates = fetch_rates();

    // Validate: each step is wired to the outputs it reads; orders are checked against the
    // valid customers and products and the known currencies.
    let customers = validate_customers(raw_customers);
    let products = validate_products(raw_products);
    let orders = validate_orders(raw_orders, &customers, &products, &rates);
    let quality = data_quality(&customers, &products, &orders);

    // Transform and join.
    let customers = normalise_customers(customers);
    let orders = transform(orders, &rates);
    let sales = join_sales(orders, customers, products);

    // Aggregate: four independent summaries of the same sales, side by side.
    let by_country = revenue_by(&sales, Dimension::Country);
    let by_category = revenue_by(&sales, Dimension::Category);
    let by_month = revenue_by(&sales, Dimension::Month);
    let top = top_customers(&sales, 5);

    // Load: the one await of the workflow.
    let output = write_report(out_dir, data_dir, quality, by_country, by_category, by_month, top, rates).await?;
    ctx.log(output.summary.clone());
    Ok(output)
}
// ANCHOR_END: workflow

/// Validates every row of `raw` with `check_row`, which pushes the row's problems and returns
/// the typed row when there are none.
fn check<R, T>(raw: Extracted<R>, mut check_row: impl FnMut(&R, u64, &mut Vec<String>) -> Option<T>) -> Checked<T> {
    let read = raw.rows.len() + raw.rejects.len();
    let (mut rows, mut rejects) = (Vec::new(), raw.rejects);
    for Lined { line, row } in raw.rows {
        let mut problems = Vec::new();
        match check_row(&row, line, &mut problems) {
            Some(valid) if problems.is_empty() => rows.push(valid),
            _ => {
                if problems.is_empty() {
                    problems.push("invalid row".to_owned());
                }
                rejects.push(Reject { source: raw.source.clone(), line, reason: problems.join("; ") });
            }
        }
    }
    rejects.sort_by_key(|r| r.line);
    Checked { source: raw.source, read, rows, rejects }
}

/// Whether `value` is present; records `missing FIELD` if not.
fn required(field: &str, value: &str, problems: &mut Vec<String>) -> bool {
    if value.is_empty() {
        problems.push(format!("missing {field}"));
    }
    !value.is_empty()
}

/// A numeric id, or a recorded problem.
fn parse_id(field: &str, value: &str, problems: &mut Vec<String>) -> Option<u32> {
    if !required(field, value, problems) {
        return None;
    }
    let id = value.parse().ok();
    if id.is_none() {
        problems.push(format!("{field} {value:?} is not a number"));
    }
    id
}

/// `id`, unless a previous row had it already (then a recorded problem).
fn unique(
    id: u32,
    line: u64,
    field: &str,
    first_seen: &mut HashMap<u32, u64>,
    problems: &mut Vec<String>,
) -> Option<u32> {
    match first_seen.get(&id) {
        Some(first) => {
            problems.push(format!("duplicate {field} {id} (first on line {first})"));
            None
        }
        None => {
            if problems.is_empty() {
                first_seen.insert(id, line);
            }
            Some(id)
        }
    }
}

/// A positive whole quantity, or a recorded problem.
fn parse_quantity(value: &str, problems: &mut Vec<String>) -> Option<u32> {
    if !required("quantity", value, problems) {
        return None;
    }
    match value.parse::<i64>() {
        Ok(q) if q < 0 => problems.push(format!("quantity {q} is negative")),
        Ok(0) => problems.push("quantity is 0".to_owned()),
        Ok(q) => match u32::try_from(q) {
            Ok(q) => return Some(q),
            Err(_) => problems.push(format!("quantity {q} is too large")),
        },
        Err(_) => problems.push(format!("quantity {value:?} is not a whole number")),
    }
    None
}

/// An amount like `12.5` or `12.50` in cents, or a recorded problem.
fn parse_cents(field: &str, value: &str, problems: &mut Vec<String>) -> Option<u64> {
    if !required(field, value, problems) {
        return None;
    }
    if value.starts_with('-') {
        problems.push(format!("{field} {value} is negative"));
        return None;
    }
    let (units, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if units.is_empty() || !digits(units) || !digits(fraction) || fraction.len() > 2 || value.ends_with('.') {
        problems.push(format!("{field} {value:?} is not an amount like 12.50"));
        return None;
    }
    let cents = format!("{fraction:0<2}").parse::<u64>().ok()?;
    match units.parse::<u64>().ok().and_then(|u| u.checked_mul(100)).and_then(|u| u.checked_add(cents)) {
        Some(total) => Some(total),
        None => {
            problems.push(format!("{field} {value} is too large"));
            None
        }
    }
}

/// `value` if it is a real date `YYYY-MM-DD`.
fn parse_date(value: &str) -> Option<&str> {
    let bytes = value.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year: u32 = value[..4].parse().ok()?;
    let month: u32 = value[5..7].parse().ok()?;
    let day: u32 = value[8..].parse().ok()?;
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (1..=days).contains(&day).then_some(value)
}

/// The English name of a country as it may be typed: a name, a local name or an ISO code, in
/// any case.
fn canonical_country(typed: &str) -> Option<&'static str> {
    const COUNTRIES: &[(&str, &[&str])] = &[
        ("Germany", &["germany", "de", "deutschland"]),
        ("France", &["france", "fr"]),
        ("United Kingdom", &["united kingdom", "uk", "gb", "great britain"]),
        ("United States", &["united states", "usa", "us"]),
        ("Spain", &["spain", "es", "españa"]),
        ("Netherlands", &["netherlands", "nl", "holland", "the netherlands"]),
        ("Italy", &["italy", "it", "italia"]),
        ("Sweden", &["sweden", "se", "sverige"]),
        ("Switzerland", &["switzerland", "ch", "schweiz", "suisse"]),
    ];
    let typed = typed.trim().to_lowercase();
    COUNTRIES.iter().find(|(_, aliases)| aliases.contains(&typed.as_str())).map(|(name, _)| *name)
}

/// Euro cents as `€12,345.67`.
fn eur(cents: u64) -> String {
    let units = (cents / 100).to_string();
    let mut grouped = String::new();
    for (i, digit) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("€{grouped}.{:02}", cents % 100)
}

/// `part` as a percentage of `whole`, one decimal.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 { "-".to_owned() } else { format!("{:.1}%", part as f64 * 100.0 / whole as f64) }
}

/// `word` with a capital first letter.
fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

// ANCHOR: main
/// The command line: `run`, `show`, `logs`, `graph`… (`cargo run --example etl -- --help`).
fn main() -> std::process::ExitCode {
    salt::main_with_default_db(".salt/etl.db")
}
// ANCHOR_END: main
