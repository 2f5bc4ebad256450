from opencsbs.cli import main

main(prog_name="opencsbs")
