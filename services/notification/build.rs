// sqlx::migrate! embeds the migrations at compile time, but on stable Rust the compiler does
// not see a new file in the directory; this makes a new migration rebuild the crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
