from lightning_rect.cli import main

main()
