use axum_typed_session::Session;

#[derive(Default, Clone)]
struct Cart {
    items: Vec<u32>,
}

#[derive(Session, Default)]
struct Visit {
    cart: Cart,
}

fn main() {}
