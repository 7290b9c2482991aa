fn main() -> anyhow::Result<()> {
    quire_server::cli::main()
}
