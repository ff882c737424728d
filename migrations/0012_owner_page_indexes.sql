-- Issue 20: a page of a user's documents, conversations or files is read in the
-- order the lists show (`order by updated_at desc, id`) straight off an index:
-- the 50 rows of the page, not every row of the user sorted for each page. The
-- old indexes (owner_id, updated_at desc) stop one column short of that order;
-- the new ones serve every query the old ones did.
create index documents_owner_page_idx on documents (owner_id, updated_at desc, id);
drop index documents_owner_id_idx;

create index conversations_owner_page_idx on conversations (owner_id, updated_at desc, id);
drop index conversations_owner_id_idx;

create index files_owner_page_idx on files (owner_id, updated_at desc, id);
drop index files_owner_id_idx;
