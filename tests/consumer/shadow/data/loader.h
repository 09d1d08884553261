// A project's own header with the name of one of Volt's: Volt's headers must never include it.
#error "the embedding project's own data/loader.h was included in place of Volt's"
